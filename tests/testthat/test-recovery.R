# Parameter recovery on simulated GLMMs of every family, and agreement of
# minibatch with full-batch fits.

recovery_cases <- list(
  list(sim = "gaussian", family = gaussian()),
  list(sim = "binomial", family = binomial(), trials = 5),
  list(sim = "poisson", family = poisson()),
  list(sim = "negbin", family = negbin())
)

for (cs in recovery_cases) {
  test_that(paste("svi_fit recovers simulated parameters:", cs$sim), {
    d <- sim_glmm(cs$sim, n_groups = 40, n_per = 25, seed = 21,
                  trials = if (is.null(cs$trials)) 1 else cs$trials)
    truth <- attr(d, "truth")
    f <- if (cs$sim == "binomial") {
      cbind(y, trials - y) ~ x1 + x2 + (x1 | g)
    } else {
      y ~ x1 + x2 + (x1 | g)
    }
    fit <- svi_fit(f, d, family = cs$family, seed = 3)
    expect_equal(fit$stop_reason, "converged")
    est <- fixef(fit)
    se <- sqrt(diag(vcov(fit)))
    # within 4 posterior sds (mean-field sds are too small: allow a floor)
    expect_true(all(abs(est - truth$beta) < 4 * pmax(se, 0.05)),
                info = paste(format(est), collapse = " "))
    sds <- attr(VarCorr(fit)$g, "stddev")
    expect_true(all(abs(sds / truth$sd - 1) < 0.5), info = paste(format(sds), collapse = " "))
    if (cs$sim == "gaussian") expect_lt(abs(sigma(fit) / truth$sigma - 1), 0.1)
    if (cs$sim == "negbin") expect_lt(abs(log(sigma(fit) / truth$phi)), log(1.5))
  })
}

test_that("a minibatch fit agrees with the full-batch fit", {
  d <- sim_glmm("poisson", n_groups = 50, n_per = 60, seed = 22, crossed = 10)
  f <- y ~ x1 + x2 + (1 | g) + (1 | h)
  full <- svi_fit(f, d, family = poisson(), seed = 1)
  mb <- svi_fit(f, d, family = poisson(), seed = 1,
                control = svi_control(batch_size = 500, max_steps = 20000))
  expect_equal(mb$stop_reason, "converged")
  se <- sqrt(diag(vcov(full)))
  expect_lt(max(abs(fixef(mb) - fixef(full)) / se), 0.5)
  sd_full <- sapply(VarCorr(full), function(v) attr(v, "stddev"))
  sd_mb <- sapply(VarCorr(mb), function(v) attr(v, "stddev"))
  expect_lt(max(abs(sd_mb / sd_full - 1)), 0.2)
  re_full <- ranef(full)$g[, 1]
  re_mb <- ranef(mb)$g[, 1]
  expect_gt(cor(re_full, re_mb), 0.95)
})

test_that("full-rank and mean-field agree on the fixed effects", {
  d <- sim_glmm("binomial", n_groups = 30, n_per = 20, seed = 23)
  mf <- svi_fit(y ~ x1 + x2 + (1 | g), d, family = binomial(), seed = 4)
  fr <- svi_fit(y ~ x1 + x2 + (1 | g), d, family = binomial(), guide = "fullrank", seed = 4)
  se <- sqrt(diag(vcov(fr)))
  expect_lt(max(abs(fixef(mf) - fixef(fr)) / se), 0.5)
  # full-rank captures posterior correlation between the fixed effects
  expect_true(any(abs(cov2cor(vcov(fr))[upper.tri(diag(3))]) > 0.05))
  expect_true(all(eigen(vcov(mf), symmetric = TRUE)$values > 0))
})
