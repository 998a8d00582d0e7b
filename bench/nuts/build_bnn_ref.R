#!/usr/bin/env Rscript
# NUTS reference for a small Bayesian neural network (issue 18, point 7):
# one hidden layer of 5 tanh units on a one-dimensional regression (n = 60,
# y = sin(2 x) + x / 2 + N(0, 0.25^2), x uniform on (-2, 2)), svir's bnn()
# priors on the standardised scale (bench/nuts/bnn_small.stan). Writes the
# fixture inst/extdata/bnn-small-nuts.rds: the data, the test inputs (11
# points on -2.5..2.5, the last two outside the data), and the posterior
# predictive mean and sd there, of the mean (mu) and of a new observation
# (y), in the response's units; and bench/results/bnn-small-nuts-<date>.md
# with svir's fit beside it.
#
# Usage (from the repository root, svir installed):
#   Rscript bench/nuts/build_bnn_ref.R [--lib=DIR] [--iter=4000] [--warmup=1000]
#
# rstan NUTS, 4 chains (2 at a time), seed 1, adapt_delta 0.95. The
# network's posterior has symmetric modes (hidden units exchanged, signs
# of tanh units flipped); the predictive quantities reported do not depend
# on which mode a chain is in, so their R-hat and ESS are what is checked
# (R-hat < 1.01, bulk ESS >= 400).
ref_date <- format(Sys.Date())
bench_dir <- local({
  f <- grep("^--file=", commandArgs(FALSE), value = TRUE)
  if (length(f)) dirname(dirname(normalizePath(sub("^--file=", "", f[1])))) else "bench"
})
source(file.path(bench_dir, "args.R"))
a <- bench_args("usage: Rscript bench/nuts/build_bnn_ref.R [--lib=DIR] [--iter=4000] [--warmup=1000]",
                c(lib = "", iter = "4000", warmup = "1000"))
if (nzchar(a$lib)) .libPaths(c(normalizePath(a$lib), .libPaths()))
iter <- as.integer(a$iter)
warmup <- as.integer(a$warmup)
source(file.path(bench_dir, "nuts", "setup.R"))

set.seed(20261205)
n <- 60
d <- data.frame(x = runif(n, -2, 2))
d$y <- sin(2 * d$x) + d$x / 2 + rnorm(n, sd = 0.25)
xt <- seq(-2.5, 2.5, by = 0.5)
xm <- mean(d$x)
xs <- sd(d$x)
ym <- mean(d$y)
ys <- sd(d$y)
sdat <- list(N = n, d = 1L, H = 5L, X = matrix((d$x - xm) / xs), y = (d$y - ym) / ys,
             M = length(xt), Xt = matrix((xt - xm) / xs), s = 1, sb = 1)
mod <- rstan::stan_model(file.path(here, "bnn_small.stan"))
t0 <- proc.time()[["elapsed"]]
fit <- rstan::sampling(mod, data = sdat, chains = 4, cores = 2, iter = iter, warmup = warmup,
                       seed = 1, control = list(adapt_delta = 0.95), refresh = 0)
secs <- proc.time()[["elapsed"]] - t0
mu <- rstan::extract(fit, "mu_t")$mu_t * ys + ym
yt <- rstan::extract(fit, "y_t")$y_t * ys + ym
mon <- rstan::monitor(rstan::extract(fit, c("mu_t", "y_t"), permuted = FALSE), warmup = 0, print = FALSE)
ndiv <- sum(rstan::get_divergent_iterations(fit))
ref <- list(data = d, xt = xt, hidden = 5L, activation = "tanh",
            mu_mean = colMeans(mu), mu_sd = apply(mu, 2, sd),
            y_mean = colMeans(yt), y_sd = apply(yt, 2, sd),
            rhat_max = max(mon[, "Rhat"]), ess_bulk_min = min(mon[, "Bulk_ESS"]),
            divergent = ndiv, iter = iter, warmup = warmup, date = ref_date,
            rstan = as.character(utils::packageVersion("rstan")))
saveRDS(ref, file.path(root, "inst", "extdata", "bnn-small-nuts.rds"))
# svir beside it
f <- svi_fit(y ~ x, d, model = bnn(hidden = 5, activation = "tanh", kl_warmup = 2000), seed = 1,
             control = svi_control(max_steps = 20000, progress = FALSE))
p <- predict(f, data.frame(x = xt))
pl <- predict(f, data.frame(x = xt), type = "link")
tab <- data.frame(x = xt, nuts_mu = ref$mu_mean, svir_mu = pl$mean, nuts_mu_sd = ref$mu_sd,
                  svir_mu_sd = pl$sd, nuts_y_sd = ref$y_sd, svir_y_sd = p$sd)
lines <- c(sprintf("# A small Bayesian neural network: svir against NUTS (%s)", ref_date), "",
           sprintf("`Rscript bench/nuts/build_bnn_ref.R --iter=%d --warmup=%d`; rstan %s, 4 chains, %.0f s; R-hat max %.4f, bulk ESS min %.0f, %d divergent transitions. svir: %d steps, %s, %.1f s.",
                   iter, warmup, ref$rstan, secs, ref$rhat_max, ref$ess_bulk_min, ndiv, f$steps,
                   f$stop_reason, f$time), "",
           "```", utils::capture.output(print(tab, digits = 3, row.names = FALSE)), "```")
cat(lines, sep = "\n")
writeLines(lines, file.path(root, "bench", "results", sprintf("bnn-small-nuts-%s.md", ref_date)))
