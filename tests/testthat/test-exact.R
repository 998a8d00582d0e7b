# Gaussian linear model with known sigma and a normal prior: the posterior of
# the coefficients is Gaussian and known exactly. Full-rank SVI must recover
# its mean and covariance, mean-field its mean (the mean-field optimum of a
# Gaussian target has the exact mean), up to Monte-Carlo error.

exact_setup <- function() {
  set.seed(10)
  n <- 200
  x1 <- rnorm(n)
  x2 <- 0.8 * x1 + 0.6 * rnorm(n) # correlated, so the posterior is too
  X <- cbind(1, x1, x2)
  y <- drop(X %*% c(0.3, 1, -0.5)) + rnorm(n)
  s0 <- 2
  # sigma = 1 is pinned by a prior of sd 0.01 around it (the marginal
  # posterior of the coefficients then differs from the known-sigma one by a
  # factor 1 + O(1e-4) in variance)
  spec <- list(y = y, trials = NULL, offset = NULL, X = X, family = 0L, link = 0L,
               terms = list(), prior_type = c(1L, 1L, 1L, 1L),
               prior_df = c(1, 1, 1, 1), prior_loc = c(0, 0, 0, 1),
               prior_scale = c(s0, s0, s0, 0.01), init_mu = c(0, 0, 0, 0))
  V <- solve(crossprod(X) + diag(3) / s0^2)
  list(spec = spec, mean = drop(V %*% crossprod(X, y)), cov = V)
}

test_that("full-rank SVI recovers the exact Gaussian posterior", {
  ex <- exact_setup()
  ctrl <- list(guide = "fullrank", max_steps = 20000, lr = 0.05, seed = 1,
               threads = 1L, ndraws = 4000L, num_particles = 4L)
  r <- .Call(svir:::C_svir_fit_r, ex$spec, ctrl)
  expect_equal(r$stop_reason, "converged")
  sdev <- sqrt(diag(ex$cov))
  expect_lt(max(abs(r$mu[1:3] - ex$mean) / sdev), 0.05)
  S <- (r$L %*% t(r$L))[1:3, 1:3]
  expect_lt(max(abs(sqrt(diag(S)) / sdev - 1)), 0.05)
  expect_lt(max(abs(cov2cor(S) - cov2cor(ex$cov))), 0.03)
  # the draws come from the same guide (Monte Carlo error of 4000 draws)
  dr <- r$draws[, 1:3]
  expect_lt(max(abs(colMeans(dr) - ex$mean) / sdev), 0.15)
  expect_lt(max(abs(apply(dr, 2, sd) / sdev - 1)), 0.15)
})

test_that("mean-field SVI recovers the exact posterior mean", {
  ex <- exact_setup()
  ctrl <- list(guide = "meanfield", max_steps = 20000, lr = 0.05, seed = 2,
               threads = 1L, ndraws = 100L, num_particles = 4L)
  r <- .Call(svir:::C_svir_fit_r, ex$spec, ctrl)
  expect_equal(r$stop_reason, "converged")
  sdev <- sqrt(diag(ex$cov))
  # the mean moves slowly along the ridge of the correlated posterior, which
  # mean-field noise cannot see: allow 0.15 posterior sd
  expect_lt(max(abs(r$mu[1:3] - ex$mean) / sdev), 0.15)
  # mean-field variances are the conditional ones: 1 / diag(precision)
  cond_sd <- 1 / sqrt(diag(solve(ex$cov)))
  expect_lt(max(abs(exp(r$omega[1:3]) / cond_sd - 1)), 0.05)
})

# Random-intercept model with known variances: the marginal posterior of the
# intercept is N(sum w_j ybar_j / (sum w_j + 1/s0^2), 1 / (sum w_j + 1/s0^2)),
# w_j = 1 / (tau^2 + sigma^2 / n_j). The plain guide q(beta) q(z) cannot give
# the intercept the spread of the groups' common level; the coupled guide
# (default) must, within Monte-Carlo tolerance.
test_that("the coupled guide recovers the intercept's exact marginal posterior", {
  nn <- normal_normal_setup()
  spec <- nn$spec
  post_mean <- nn$post_mean
  post_var <- nn$post_var
  ctrl <- list(guide = "meanfield", seed = 3, threads = 1L, ndraws = 10L,
               num_particles = 4L, max_steps = 20000)
  r <- .Call(svir:::C_svir_fit_r, spec, ctrl)
  expect_equal(r$stop_reason, "converged")
  expect_lt(abs(r$mu[1] - post_mean) / sqrt(post_var), 0.1)
  expect_lt(abs(exp(r$omega[1]) / sqrt(post_var) - 1), 0.1)
  # without the coupling the intercept's spread collapses
  r0 <- .Call(svir:::C_svir_fit_r, spec, modifyList(ctrl, list(couple = 0L)))
  expect_lt(exp(r0$omega[1]) / sqrt(post_var), 0.5)
})
