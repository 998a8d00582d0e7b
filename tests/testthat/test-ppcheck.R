# pp_check() (bayesplot's generic) on each model's fit (issue 18): the
# observed values are the fit's response or counts, the replicates
# posterior_predict()'s, and the plot is bayesplot's.
skip_if_not_installed("bayesplot")

test_that("pp_check on a GLMM plots its response against posterior_predict's replicates", {
  fit <- svi_fit(cbind(incidence, size - incidence) ~ period + (1 | herd), lme4::cbpp,
                 family = binomial(), seed = 2, control = svi_control(progress = FALSE))
  u <- svir:::svir_pp_data(fit, NULL, 30, 5)
  expect_identical(u$y, as.double(lme4::cbpp$incidence))
  expect_identical(u$yrep, svir:::posterior_predict.svi_fit(fit, ndraws = 30, seed = 5))
  expect_identical(dim(u$yrep), c(30L, nrow(lme4::cbpp)))
  p <- bayesplot::pp_check(fit, ndraws = 30, seed = 5)
  expect_s3_class(p, "ggplot")
  # the "stat" plot's replicated statistics are the replicates' means
  ps <- bayesplot::pp_check(fit, type = "stat", stat = "mean", ndraws = 30, seed = 5)
  expect_equal(sort(ps$data$value), sort(rowMeans(u$yrep)))
  # newdata: its response
  nd <- lme4::cbpp[1:10, ]
  expect_identical(svir:::svir_pp_data(fit, nd, 5, 1)$y, as.double(nd$incidence))
  expect_error(bayesplot::pp_check(fit, type = "no_such_plot"), "type", class = "svir_error")
  expect_error(bayesplot::pp_check(fit, type = 3), "type", class = "svir_error")
  expect_error(bayesplot::pp_check(fit, ndraws = 0), "ndraws", class = "svir_error")
  expect_error(bayesplot::pp_check(fit, newdata = nd[, c("herd", "period")]), "response", class = "svir_error")
})

test_that("pp_check on a network needs newdata and uses its response", {
  set.seed(7)
  n <- 60
  d <- data.frame(x = runif(n, -2, 2))
  d$y <- sin(2 * d$x) + rnorm(n, 0, 0.25)
  d$z <- factor(ifelse(d$x + rnorm(n, 0, 0.5) > 0, "yes", "no"))
  fit <- suppressWarnings(svi_fit(y ~ x, d, model = bnn(hidden = 5), seed = 1,
                                  control = svi_control(progress = FALSE, max_steps = 300)))
  expect_error(bayesplot::pp_check(fit), "newdata", class = "svir_error")
  u <- svir:::svir_pp_data(fit, d, 20, 3)
  expect_identical(u$y, d$y)
  expect_identical(u$yrep, svir:::posterior_predict.svi_bnn(fit, newdata = d, ndraws = 20, seed = 3))
  expect_s3_class(bayesplot::pp_check(fit, newdata = d, type = "ecdf_overlay", ndraws = 20), "ggplot")
  # a factor response: 1 for its second level, as log_lik()'s
  fz <- suppressWarnings(svi_fit(z ~ x, d, family = binomial(), model = bnn(hidden = 3), seed = 1,
                                 control = svi_control(progress = FALSE, max_steps = 300)))
  expect_identical(svir:::svir_pp_data(fz, d, 10, 1)$y, as.double(d$z == "yes"))
  expect_s3_class(bayesplot::pp_check(fz, newdata = d, type = "bars", ndraws = 10), "ggplot")
})

test_that("pp_check on count models uses the count matrix in column-major order", {
  set.seed(8)
  n <- 40
  mu <- rbind(c(1, 8, 3, 1), c(8, 1, 1, 5))
  z <- rep(1:2, each = n / 2)
  d <- data.frame(x = rnorm(n), depth = exp(rnorm(n, 0, 0.3)))
  d$Y <- matrix(rpois(n * 4, mu[z, ]), n, dimnames = list(NULL, paste0("g", 1:4)))
  fm <- suppressWarnings(svi_fit(Y ~ 1, d, family = count_mixture(2, "poisson", nstart = 1), seed = 1,
                                 control = svi_control(progress = FALSE, max_steps = 300)))
  expect_error(bayesplot::pp_check(fm), "newdata", class = "svir_error")
  u <- svir:::svir_pp_data(fm, d, 10, 2)
  expect_identical(u$y, as.double(d$Y))
  expect_identical(dim(u$yrep), c(10L, as.integer(n * 4)))
  expect_s3_class(bayesplot::pp_check(fm, newdata = d, type = "rootogram", ndraws = 10), "ggplot")
  fp <- svi_fit(Y ~ x + offset(log(depth)), data = d, family = pln())
  u <- svir:::svir_pp_data(fp, NULL, 10, 2)
  expect_identical(u$y, as.double(d$Y))
  expect_identical(u$yrep, svir:::posterior_predict.svi_pln(fp, ndraws = 10, seed = 2))
  expect_s3_class(bayesplot::pp_check(fp, ndraws = 10), "ggplot")
})
