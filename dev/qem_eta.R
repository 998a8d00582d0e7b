# QEM's moving-average step: eta0 x K on a Poisson random-intercept GLMM,
# started with x1's coefficient at 0 and sd 1 on every global; mean-field SVI
# is the reference. Prints, per setting, the iterations to the plateau stop,
# the posterior means and sds, and how far the run with x1 rescaled by 1000
# lands from it (the rescaling invariance). The table in dev/QEM.md ("Plan
# for the C engine") comes from this script.
# Run from the repository root with svir installed: Rscript dev/qem_eta.R
suppressMessages(library(svir))
source("tests/testthat/helper-sim.R")
d <- sim_glmm("poisson", n_groups = 20, n_per = 8, seed = 5)
b <- svir:::svir_build_spec(y ~ x1 + x2 + (1 | g), d, family = poisson())
spec <- b$spec
D <- length(spec$prior_type)
spec$init_mu <- svir:::svir_init_mu(spec, b$info)
spec$init_mu[2] <- 0
spec$init_sd <- rep(1, D)
scaled <- spec
scaled$X[, 2] <- spec$X[, 2] / 1000
scaled$prior_scale[2] <- spec$prior_scale[2] * 1000
scaled$init_mu[2] <- 0
scaled$init_sd[2] <- 1000
e <- .Call(svir:::C_svir_fit_r, spec, list(guide = "meanfield", seed = 1, threads = 1L, ndraws = 10L,
                                           num_particles = 8L, stl = 1L, method = "svi"))
cat("svi:", round(e$mu, 3), " sd", signif(exp(e$omega), 2), "\n")
for (eta0 in c(1, 0.5, 0.3, 0.1)) for (K in c(16, 64)) {
  ctrl <- list(guide = "meanfield", seed = 7, threads = 1L, ndraws = 10L, K = K, qem_eta0 = eta0,
               max_steps = 2000, eval_every = 50L, method = "qem")
  q0 <- .Call(svir:::C_svir_fit_r, spec, ctrl)
  q1 <- .Call(svir:::C_svir_fit_r, scaled, ctrl)
  cat(sprintf("eta0 %.1f K %d: %d its %s mu %s sd %s | rescaled diff %.1e, bound %.2f\n", eta0, K,
              q0$steps, q0$stop_reason, paste(round(q0$mu, 3), collapse = " "),
              paste(signif(exp(q0$omega), 2), collapse = " "), abs(q1$mu[2] / 1000 - q0$mu[2]),
              q0$elbo_final))
}
