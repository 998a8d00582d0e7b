#!/usr/bin/env Rscript
# NUTS reference posterior for the Poisson-lognormal model under
# pln(globals = "bayes") (issue 16, point 7): vegan's mite counts, the 15
# most abundant species, Y ~ water + offset(log total), svir's priors (B
# flat, Sigma ~ inverse-Wishart(p + 1, I)), bench/nuts/pln_mite.stan.
# Writes the fixture inst/extdata/pln-mite-nuts.rds (posterior means and sds
# of B and of Sigma's diagonal and the settings) and
# bench/results/pln-mite-nuts-<date>.md with svir's fit beside it.
#
# Usage (from the repository root, svir installed):
#   Rscript bench/nuts/build_pln_ref.R [--lib=/work/lib] [--iter=2500] [--warmup=500]
#
# rstan NUTS, 4 chains (2 at a time) started at svir's fit (random starts
# put Sigma so far out that the chains never moved), seed 1, adapt_delta
# 0.9; the run is repeated with twice the iterations (at most twice) while
# a reported parameter has split-Rhat >= 1.01 or bulk or tail ESS below 400
# (Monte Carlo error at most 0.05 posterior sds).

ref_date <- format(Sys.Date())
args <- commandArgs(trailingOnly = TRUE)
arg_of <- function(flag, default = "") {
  hit <- grep(paste0("^--", flag, "(=|$)"), args, value = TRUE)
  if (!length(hit)) return(default)
  sub(paste0("^--", flag, "=?"), "", hit[length(hit)])
}
bad <- setdiff(sub("^--([^=]*).*$", "\\1", args), c("lib", "iter", "warmup"))
if (length(bad)) {
  cat("usage: Rscript bench/nuts/build_pln_ref.R [--lib=DIR] [--iter=2500] [--warmup=500]\n")
  quit(status = 2L)
}
lib <- arg_of("lib")
if (nzchar(lib)) .libPaths(c(normalizePath(lib), .libPaths()))
iter <- as.integer(arg_of("iter", "2500"))
warmup <- as.integer(arg_of("warmup", "500"))
source(file.path(local({
  f <- grep("^--file=", commandArgs(FALSE), value = TRUE)
  if (length(f)) dirname(sub("^--file=", "", f[1])) else "bench/nuts"
}), "setup.R"))

d <- svir:::svir_mite15()
fit_svir <- svi_fit(Y ~ water + offset(lib), data = d, family = pln(globals = "bayes"))
pr <- fit_svir$sigma_prior
X <- model.matrix(~ water, d)
sdat <- list(n = nrow(d$Y), p = ncol(d$Y), d = ncol(X), Y = unclass(d$Y), X = X, off = d$lib,
             nu0 = pr$df, s0 = pr$scale)
mod <- rstan::stan_model(file.path(here, "pln_mite.stan"))

# the Stan log density (no Jacobian) against one written here in R
set.seed(2)
p <- sdat$p
pt <- list(B = matrix(rnorm(2 * p, 0, 0.3), 2), c = rchisq(p, 20), a = rnorm(p * (p - 1) / 2, 0, 0.2),
           Z = matrix(rnorm(sdat$n * p), sdat$n))
sf0 <- rstan::sampling(mod, data = sdat, chains = 0)
up <- rstan::unconstrain_pars(sf0, pt)
lp_stan <- rstan::log_prob(sf0, up, adjust_transform = FALSE)
LA <- diag(sqrt(pt$c))
LA[lower.tri(LA)] <- pt$a          # column-major fill below the diagonal, as the Stan loop
LA <- LA / sqrt(pr$scale)
Sig <- solve(tcrossprod(LA))
lp_r <- sum(dchisq(pt$c, pr$df - seq_len(p) + 1, log = TRUE)) + sum(dnorm(pt$a, log = TRUE)) +
  sum(vapply(seq_len(sdat$n), function(i) {
    r <- pt$Z[i, ] - drop(X[i, ] %*% pt$B)
    -p / 2 * log(2 * pi) - as.numeric(determinant(Sig)$modulus) / 2 - sum(r * solve(Sig, r)) / 2
  }, 0)) + sum(dpois(sdat$Y, exp(d$lib + pt$Z), log = TRUE))
# Stan's ~ statements drop their constants: compare two points' differences
pt2 <- pt
pt2$B <- pt$B + 0.1
pt2$c <- pt$c * 1.1
pt2$Z <- pt$Z + 0.05
lp_stan2 <- rstan::log_prob(sf0, rstan::unconstrain_pars(sf0, pt2), adjust_transform = FALSE)
LA2 <- diag(sqrt(pt2$c))
LA2[lower.tri(LA2)] <- pt2$a
Sig2 <- solve(tcrossprod(LA2 / sqrt(pr$scale)))
lp_r2 <- sum(dchisq(pt2$c, pr$df - seq_len(p) + 1, log = TRUE)) + sum(dnorm(pt2$a, log = TRUE)) +
  sum(vapply(seq_len(sdat$n), function(i) {
    r <- pt2$Z[i, ] - drop(X[i, ] %*% pt2$B)
    -p / 2 * log(2 * pi) - as.numeric(determinant(Sig2)$modulus) / 2 - sum(r * solve(Sig2, r)) / 2
  }, 0)) + sum(dpois(sdat$Y, exp(d$lib + pt2$Z), log = TRUE))
cat(sprintf("log density difference between two points: Stan %.8f, R %.8f\n", lp_stan2 - lp_stan, lp_r2 - lp_r))
stopifnot(abs((lp_stan2 - lp_stan) - (lp_r2 - lp_r)) < 1e-6 * abs(lp_r2 - lp_r))

# inits: the svir fit's B, Sigma (jittered per chain) and latent means
init_one <- function(k) {
  set.seed(k)
  Om <- solve(sigma(fit_svir) * exp(rnorm(1, 0, 0.1)))
  L <- t(chol(Om)) * sqrt(pr$scale)
  list(B = coef(fit_svir) + matrix(rnorm(2 * p, 0, 0.02), 2), c = diag(L)^2, a = L[lower.tri(L)],
       Z = fit_svir$M)
}

pars_keep <- c("B", "Sigma")
run <- function(it) {
  rstan::sampling(mod, data = sdat, chains = 4, cores = 2, iter = warmup + it, warmup = warmup,
                  seed = 1, control = list(adapt_delta = 0.9, max_treedepth = 10),
                  init = lapply(1:4, init_one),
                  pars = pars_keep, refresh = 0)
}
t0 <- proc.time()[["elapsed"]]
for (attempt in 1:3) {
  sf <- run(iter)
  dr <- posterior::as_draws_array(as.array(sf))
  keep <- c(grep("^B\\[", dimnames(dr)$variable, value = TRUE),
            sprintf("Sigma[%d,%d]", seq_len(p), seq_len(p)))
  sm <- posterior::summarise_draws(posterior::subset_draws(dr, variable = keep),
                                   "mean", "sd", "rhat", "ess_bulk", "ess_tail")
  ndiv <- rstan::get_num_divergent(sf)
  cat(sprintf("attempt %d: %d iterations, max Rhat %.4f, min ESS bulk %.0f tail %.0f, %d divergent\n",
              attempt, iter, max(sm$rhat), min(sm$ess_bulk), min(sm$ess_tail), ndiv))
  if (max(sm$rhat) < 1.01 && min(sm$ess_bulk) >= 400 && min(sm$ess_tail) >= 400) break
  iter <- 2L * iter
}
secs <- proc.time()[["elapsed"]] - t0
sm <- as.data.frame(sm)
ref <- list(
  data = "vegan::mite, the 15 most abundant species; water = mite.env$WatrCont / 100; offset log(rowSums(mite))",
  formula = "Y ~ water + offset(lib)", prior = pr,
  B_mean = matrix(sm$mean[1:(2 * p)], 2), B_sd = matrix(sm$sd[1:(2 * p)], 2),
  Sigma_mean = sm$mean[2 * p + seq_len(p)], Sigma_sd = sm$sd[2 * p + seq_len(p)],
  species = colnames(d$Y), rhat_max = max(sm$rhat), ess_bulk_min = min(sm$ess_bulk),
  ess_tail_min = min(sm$ess_tail), divergent = ndiv, iter = iter, warmup = warmup,
  chains = 4, seconds = secs, date = ref_date,
  rstan = as.character(packageVersion("rstan")))
saveRDS(ref, file.path(root, "inst", "extdata", "pln-mite-nuts.rds"), version = 2)

# svir beside it
Bz <- (coef(fit_svir) - ref$B_mean) / ref$B_sd
Bsd <- sqrt(outer(diag(fit_svir$XtXinv), diag(fit_svir$sigma)))
post <- pln_sigma_posterior(fit_svir)
Sz <- (post$mean - ref$Sigma_mean) / ref$Sigma_sd
out <- file.path(root, "bench", "results", sprintf("pln-mite-nuts-%s.md", ref_date))
lines <- c(
  sprintf("# PLN posterior on mite (15 species) against NUTS, %s", ref_date), "",
  "`Rscript bench/nuts/build_pln_ref.R` on this 2-core VM.", "",
  sprintf("NUTS: rstan %s, 4 chains, %d warmup + %d iterations, max Rhat %.4f, min bulk ESS %.0f, min tail ESS %.0f, %d divergent, %.0f s.",
          ref$rstan, warmup, iter, ref$rhat_max, ref$ess_bulk_min, ref$ess_tail_min, ndiv, secs),
  sprintf("svir: `svi_fit(Y ~ water + offset(lib), family = pln(globals = \"bayes\"))`, %.2f s.", fit_svir$time), "",
  "| species | B (Intercept) z | B water z | sd ratio water | Sigma_jj NUTS | Sigma_jj svir | z | sd ratio |",
  "|---|---|---|---|---|---|---|---|",
  sprintf("| %s | %.2f | %.2f | %.2f | %.3f | %.3f | %.2f | %.2f |", ref$species, Bz[1, ], Bz[2, ],
          Bsd[2, ] / ref$B_sd[2, ], ref$Sigma_mean, post$mean, Sz, post$sd / ref$Sigma_sd), "",
  sprintf("Largest |z|: B %.2f (bar 0.5), Sigma's diagonal %.2f (bar 1).", max(abs(Bz)), max(abs(Sz))))
writeLines(lines, out)
cat(lines, sep = "\n")
