# Seeds: the same seed gives bit-identical fits for a given thread count, and
# seed = NULL takes the seed from R's generator so that set.seed() governs.

f <- Reaction ~ Days + (Days | Subject)

test_that("the same seed reproduces a fit bit for bit", {
  a <- svi_fit(f, lme4::sleepstudy, seed = 42, method = "svi", control = svi_control(threads = 1))
  b <- svi_fit(f, lme4::sleepstudy, seed = 42, method = "svi", control = svi_control(threads = 1))
  expect_identical(a$engine$vpar, b$engine$vpar)
  expect_identical(a$engine$elbo, b$engine$elbo)
  expect_identical(as.matrix(a), as.matrix(b))
  c <- svi_fit(f, lme4::sleepstudy, seed = 43, method = "svi", control = svi_control(threads = 1))
  expect_false(identical(a$engine$vpar, c$engine$vpar))
})

test_that("the Laplace sampler's draws depend on the seed only, not on the threads", {
  a <- svi_fit(f, lme4::sleepstudy, seed = 42, method = "laplace", control = svi_control(threads = 1))
  b <- svi_fit(f, lme4::sleepstudy, seed = 42, method = "laplace", control = svi_control(threads = 2))
  expect_identical(a$engine$log_ratio, b$engine$log_ratio)
  expect_identical(as.matrix(a), as.matrix(b))
  c <- svi_fit(f, lme4::sleepstudy, seed = 43, method = "laplace", control = svi_control(threads = 1))
  expect_false(identical(a$engine$log_ratio, c$engine$log_ratio))
})

test_that("set.seed() governs fits with seed = NULL", {
  set.seed(7)
  a <- svi_fit(f, lme4::sleepstudy)
  set.seed(7)
  b <- svi_fit(f, lme4::sleepstudy)
  expect_identical(a$engine$vpar, b$engine$vpar)
  expect_identical(a$seed, b$seed)
  set.seed(8)
  c <- svi_fit(f, lme4::sleepstudy)
  expect_false(identical(a$seed, c$seed))
})

test_that("multi-threaded minibatch fits reproduce for the same thread count", {
  d <- sim_glmm("poisson", n_groups = 40, n_per = 250, seed = 30)
  ctl <- svi_control(threads = 2, batch_size = 5000, max_steps = 300)
  a <- suppressWarnings(svi_fit(y ~ x1 + (1 | g), d, family = poisson(), seed = 5, control = ctl))
  b <- suppressWarnings(svi_fit(y ~ x1 + (1 | g), d, family = poisson(), seed = 5, control = ctl))
  expect_identical(a$engine$vpar, b$engine$vpar)
  # one and two threads reduce in a different order, so they may differ in
  # the last bits, but not more
  c <- suppressWarnings(svi_fit(y ~ x1 + (1 | g), d, family = poisson(), seed = 5,
                                control = svi_control(threads = 1, batch_size = 5000, max_steps = 300)))
  expect_equal(a$engine$vpar, c$engine$vpar, tolerance = 1e-6)
})

test_that("the posterior draws do not depend on how many threads compute them", {
  # 1000 draws x 20000 observations: by default the draws take every
  # thread while the steps take one; threads = 1 runs both on one
  set.seed(1)
  n <- 20000
  d <- data.frame(x = rnorm(n), g = factor(sample(200, n, TRUE)))
  d$y <- rpois(n, exp(0.3 + 0.5 * d$x + rnorm(200, sd = 0.4)[d$g]))
  a <- svi_fit(y ~ x + (1 | g), d, family = poisson(), method = "svi", seed = 3)
  b <- svi_fit(y ~ x + (1 | g), d, family = poisson(), method = "svi", seed = 3,
               control = svi_control(threads = 1))
  expect_identical(as.matrix(a), as.matrix(b))
  expect_identical(a$engine$log_ratio, b$engine$log_ratio)
})
