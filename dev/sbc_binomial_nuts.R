# Usage: Rscript dev/sbc_binomial_nuts.R FIRST LAST   (with svir and rstan installed)
# bench/sbc.R's binomial replicates FIRST..LAST fitted by svir's default and by NUTS
# (rstan, 4 chains x 2000 draws, the same priors): the slope x's posterior mean
# and sd side by side, and whether each central 50% interval holds the truth.
suppressMessages({library(svir); library(rstan)})
rstan_options(boost_lib = "/usr/include", auto_write = TRUE)
code <- "
data { int N; int J; int T; int y[N]; vector[N] x; int g[N]; }
parameters { real a; real bx; real<lower=0> s; vector[J] z; }
model { a ~ normal(0, 1); bx ~ normal(0, 1); s ~ normal(0, 0.5); z ~ std_normal();
        y ~ binomial_logit(T, a + bx * x + s * z[g]); }"
sm <- stan_model(model_code = code)
J <- 12L; n_per <- 6L; n <- J * n_per
pr <- svi_prior(intercept = normal(0, 1), b = normal(0, 1), sd = half_normal(0.5))
reps <- as.integer(commandArgs(TRUE)[1]):as.integer(commandArgs(TRUE)[2])
out <- NULL
for (r in reps) {
  set.seed(2e6 + r)
  th <- c(rnorm(1, 0, 1), rnorm(1, 0, 1), abs(rnorm(1, 0, 0.5)))
  g <- factor(rep(seq_len(J), each = n_per)); x <- rnorm(n); x <- x - mean(x); z <- rnorm(J)
  y <- rbinom(n, 10L, plogis(th[1] + th[2] * x + th[3] * z[as.integer(g)]))
  d <- data.frame(y = y, x = x, g = g)
  fit <- svi_fit(cbind(y, 10 - y) ~ x + (1 | g), d, family = binomial(), prior = pr, seed = r)
  m <- as.matrix(fit)
  ns <- sampling(sm, data = list(N = n, J = J, T = 10L, y = y, x = x, g = as.integer(g)),
                 chains = 4, iter = 3000, warmup = 1000, refresh = 0, seed = r)
  e <- rstan::extract(ns)
  row <- data.frame(r = r, truth = th[2], svir_mean = mean(m[, "x"]), svir_sd = sd(m[, "x"]),
                    nuts_mean = mean(e$bx), nuts_sd = sd(e$bx),
                    svir_sdg = mean(m[, "sd_g__(Intercept)"]), nuts_sdg = mean(e$s),
                    in50_svir = abs(rank(c(th[2], m[, "x"]))[1] / (nrow(m) + 1) - 0.5) < 0.25,
                    in50_nuts = abs(mean(e$bx < th[2]) - 0.5) < 0.25, khat = fit$laplace$khat)
  out <- rbind(out, row)
  cat(sprintf("rep %d: x svir %.3f (%.3f) nuts %.3f (%.3f): d %.2f, r %.2f\n", r, row$svir_mean,
              row$svir_sd, row$nuts_mean, row$nuts_sd, (row$svir_mean - row$nuts_mean) / row$nuts_sd,
              row$svir_sd / row$nuts_sd))
}

cat(sprintf("median |d| %.3f, max |d| %.3f, sd ratio median %.3f range %.3f-%.3f; in50 svir %d nuts %d of %d\n",
  median(abs((out$svir_mean - out$nuts_mean) / out$nuts_sd)), max(abs((out$svir_mean - out$nuts_mean) / out$nuts_sd)),
  median(out$svir_sd / out$nuts_sd), min(out$svir_sd / out$nuts_sd), max(out$svir_sd / out$nuts_sd),
  sum(out$in50_svir), sum(out$in50_nuts), nrow(out)))
