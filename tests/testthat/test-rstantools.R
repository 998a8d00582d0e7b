# rstantools' verbs on svir's fits (issue 18): posterior_epred(),
# posterior_predict(), log_lik(); loo::loo() on the log-likelihoods.
skip_if_not_installed("rstantools")

test_that("a GLMM's log_lik is each observation's density under each draw", {
  fit <- svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy, seed = 1,
                 control = svi_control(progress = FALSE))
  ll <- rstantools::log_lik(fit, ndraws = 200)
  ep <- rstantools::posterior_epred(fit, ndraws = 200)
  expect_identical(dim(ll), c(200L, 180L))
  expect_identical(dim(ep), c(200L, 180L))
  sel <- svir:::svir_draw_sel(fit, 200)
  sig <- fit$draws[sel, "sigma"]
  y <- lme4::sleepstudy$Reaction
  # the same draws: the density of y at each draw's mean and sigma
  expect_equal(ll, dnorm(matrix(y, 200, 180, byrow = TRUE), ep, sig, log = TRUE), ignore_attr = TRUE)
  # the draws' linear predictors average to the point prediction (identity
  # link) up to Monte Carlo error
  expect_lt(max(abs(colMeans(ep) - predict(fit))), 3)
  # the fitting data again as newdata: the same numbers
  expect_equal(rstantools::log_lik(fit, newdata = lme4::sleepstudy, ndraws = 200), ll)
  # loo on them: finite, and an effective number of parameters between the
  # fixed effects' 2 and the 2 x 18 random effects + 6
  skip_if_not_installed("loo")
  lo <- suppressWarnings(loo::loo(ll))
  expect_true(is.finite(lo$estimates["elpd_loo", "Estimate"]))
  expect_gt(lo$estimates["p_loo", "Estimate"], 2)
  expect_lt(lo$estimates["p_loo", "Estimate"], 42)
})

test_that("a GLMM's posterior_predict draws from the family with each draw's parameters", {
  fit <- svi_fit(cbind(incidence, size - incidence) ~ period + (1 | herd), lme4::cbpp,
                 family = binomial(), seed = 2, control = svi_control(progress = FALSE))
  yr <- rstantools::posterior_predict(fit, ndraws = 400, seed = 3)
  expect_identical(dim(yr), c(400L, nrow(lme4::cbpp)))
  expect_identical(rstantools::posterior_predict(fit, ndraws = 400, seed = 3), yr)
  expect_true(all(yr >= 0 & yr <= matrix(lme4::cbpp$size, 400, nrow(lme4::cbpp), byrow = TRUE)))
  ep <- rstantools::posterior_epred(fit, ndraws = 400)
  # the successes' mean is trials x the probability, up to Monte Carlo error
  # (binomial sd at most sqrt(size / 4) / sqrt(400))
  expect_lt(max(abs(colMeans(yr) - colMeans(ep) * lme4::cbpp$size) / sqrt(lme4::cbpp$size / 4 / 400)), 5)
  ll <- rstantools::log_lik(fit, ndraws = 400)
  expect_equal(ll, dbinom(matrix(lme4::cbpp$incidence, 400, nrow(lme4::cbpp), byrow = TRUE),
                          matrix(lme4::cbpp$size, 400, nrow(lme4::cbpp), byrow = TRUE), ep, log = TRUE),
               ignore_attr = TRUE)
  expect_error(rstantools::log_lik(fit, newdata = lme4::cbpp[, c("herd", "period")]), "response",
               class = "svir_error")
})

test_that("a zero-inflated GLMM's log_lik mixes the structural zeros in", {
  set.seed(5)
  d <- data.frame(g = factor(rep(1:20, each = 15)), x = rnorm(300))
  b <- rnorm(20, 0, 0.5)
  d$y <- ifelse(runif(300) < 0.3, 0, rpois(300, exp(0.5 + 0.4 * d$x + b[d$g])))
  fit <- svi_fit(y ~ x + (1 | g), d, family = poisson(), ziformula = ~1, seed = 1,
                 control = svi_control(progress = FALSE))
  ll <- rstantools::log_lik(fit, ndraws = 100)
  ep <- rstantools::posterior_epred(fit, ndraws = 100)
  pz <- plogis(fit$draws[svir:::svir_draw_sel(fit, 100), grep("^zi", colnames(fit$draws))[1]])
  mu <- ep / (1 - pz)
  Y <- matrix(d$y, 100, 300, byrow = TRUE)
  want <- ifelse(Y == 0, log(pz + (1 - pz) * exp(-mu)), log1p(-pz) + dpois(Y, mu, log = TRUE))
  expect_equal(ll, want, ignore_attr = TRUE, tolerance = 1e-10)
})

test_that("a network's verbs need newdata and agree with predict()", {
  set.seed(7)
  n <- 80
  d <- data.frame(x = runif(n, -2, 2))
  d$y <- sin(2 * d$x) + rnorm(n, 0, 0.25)
  fit <- suppressWarnings(svi_fit(y ~ x, d, model = bnn(hidden = 5, activation = "tanh"), seed = 1,
                                  control = svi_control(progress = FALSE, max_steps = 1500)))
  expect_error(rstantools::log_lik(fit), "newdata", class = "svir_error")
  ep <- rstantools::posterior_epred(fit, newdata = d)
  expect_identical(dim(ep), as.integer(c(nrow(fit$draws), n)))
  # the draws' mean is predict()'s mean, from the same draws
  expect_equal(colMeans(ep), predict(fit, d)$mean, tolerance = 1e-10, ignore_attr = TRUE)
  ll <- rstantools::log_lik(fit, newdata = d)
  sig <- fit$yscale * exp(fit$draws[, ncol(fit$draws)])
  expect_equal(ll, dnorm(matrix(d$y, nrow(ep), n, byrow = TRUE), ep, sig, log = TRUE),
               ignore_attr = TRUE)
  yr <- rstantools::posterior_predict(fit, newdata = d, seed = 4)
  # a new observation's sd: the mean's spread and the noise (predict()'s sd)
  expect_lt(max(abs(apply(yr, 2, sd) / predict(fit, d)$sd - 1)), 0.25)
  # a classifier's log-likelihood is Bernoulli's
  d$z <- as.integer(d$x + rnorm(n, 0, 0.5) > 0)
  fz <- suppressWarnings(svi_fit(z ~ x, d, family = binomial(), model = bnn(hidden = 4), seed = 1,
                                 control = svi_control(progress = FALSE, max_steps = 800)))
  p <- rstantools::posterior_epred(fz, newdata = d)
  expect_equal(rstantools::log_lik(fz, newdata = d),
               dbinom(matrix(d$z, nrow(p), n, byrow = TRUE), 1, p, log = TRUE), ignore_attr = TRUE)
})

test_that("a count mixture's log_lik is each row's density with its label summed out", {
  set.seed(8)
  n <- 60
  mu <- rbind(c(1, 8, 3, 1), c(8, 1, 1, 5))
  z <- rep(1:2, each = n / 2)
  d <- data.frame(row.names = paste0("cell", 1:n))
  d$Y <- matrix(rpois(n * 4, mu[z, ]), n, dimnames = list(NULL, paste0("g", 1:4)))
  fit <- suppressWarnings(svi_fit(Y ~ 1, d, family = count_mixture(2, "poisson", nstart = 1), seed = 1,
                                  control = svi_control(progress = FALSE, max_steps = 400)))
  expect_error(rstantools::log_lik(fit), "newdata", class = "svir_error")
  ll <- rstantools::log_lik(fit, newdata = d, ndraws = 50)
  expect_identical(dim(ll), c(50L, as.integer(n)))
  expect_identical(colnames(ll), rownames(d))
  # each row's density is at most its best cluster's Poisson likelihood at
  # the data's own rates, and near the truth's mixture density
  truth <- log(0.5 * exp(rowSums(dpois(d$Y, mu[rep(1, n), ], log = TRUE))) +
                 0.5 * exp(rowSums(dpois(d$Y, mu[rep(2, n), ], log = TRUE))))
  expect_lt(mean(abs(colMeans(ll) - truth)), 0.5)
  skip_if_not_installed("loo")
  lo <- suppressWarnings(loo::loo(ll))
  expect_true(is.finite(lo$estimates["elpd_loo", "Estimate"]))
})
