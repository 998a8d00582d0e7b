# PSIS k-hat (Zhang & Stephens 2009 generalized Pareto fit, loo's prior).

# exact generalized Pareto draws with shape k (sigma = 1)
rgpd <- function(n, k) (stats::runif(n)^(-k) - 1) / k

test_that("exact Pareto tails give k-hat close to the true shape", {
  set.seed(11)
  for (k in c(0.3, 0.5, 0.8, 1.1)) {
    kh <- replicate(20, svir_psis_khat(log(rgpd(4000, k))))
    # the tail of a GPD sample is a GPD with the same shape; the prior pulls
    # towards 0.5 by 10 / (M + 10) (M = 190 here), so the bias is small
    expect_lt(abs(mean(kh) - k), 0.08)
  }
})

test_that("heavier tails give larger k-hat", {
  set.seed(12)
  k1 <- mean(replicate(10, svir_psis_khat(log(rgpd(2000, 0.2)))))
  k2 <- mean(replicate(10, svir_psis_khat(log(rgpd(2000, 0.9)))))
  expect_lt(k1, k2)
})

test_that("normal log ratios with small spread give small k-hat", {
  set.seed(13)
  kh <- replicate(20, svir_psis_khat(stats::rnorm(1000, sd = 0.5)))
  expect_true(all(kh < 0.5))
  # larger spread: log-normal weights get heavy (k-hat rises with sd)
  expect_gt(mean(replicate(10, svir_psis_khat(stats::rnorm(1000, sd = 3)))), 0.7)
})

test_that("k-hat is invariant to a shift of the log ratios", {
  set.seed(14)
  lr <- stats::rnorm(1000)
  expect_equal(as.numeric(svir_psis_khat(lr)), as.numeric(svir_psis_khat(lr - 1e4)))
})

test_that("the tail length is min(S / 5, 3 sqrt(S)), rounded up", {
  set.seed(15)
  expect_equal(attr(svir_psis_khat(stats::rnorm(100)), "tail_length"), 20L)
  expect_equal(attr(svir_psis_khat(stats::rnorm(1000)), "tail_length"), 95L)
  expect_equal(attr(svir_psis_khat(stats::rnorm(4000)), "tail_length"), 190L)
})

test_that("k-hat agrees with the loo package", {
  skip_if_not_installed("loo")
  set.seed(16)
  for (i in 1:4) {
    lr <- stats::rnorm(1000, sd = i / 2) + stats::rt(1000, 3)
    ref <- suppressWarnings(loo::psis(lr, r_eff = 1)$diagnostics$pareto_k)
    expect_equal(as.numeric(svir_psis_khat(lr)), ref, tolerance = 1e-8)
  }
})

test_that("missing or non-finite log ratios give NA with a reason", {
  k <- svir_psis_khat(NULL)
  expect_true(is.na(k))
  expect_match(attr(k, "reason"), "no log importance ratios")
  k <- svir_psis_khat(c(stats::rnorm(100), NA))
  expect_true(is.na(k))
  expect_match(attr(k, "reason"), "NA, NaN or \\+Inf")
  k <- svir_psis_khat(c(stats::rnorm(100), Inf))
  expect_true(is.na(k))
  k <- svir_psis_khat(stats::rnorm(10))
  expect_true(is.na(k))
  expect_match(attr(k, "reason"), "too few draws")
  k <- svir_psis_khat(rep(1, 200))
  expect_true(is.na(k))
  expect_match(attr(k, "reason"), "all equal")
  expect_match(svir_khat_message(k), "not available")
})

test_that("draws with zero weight (-Inf) are allowed", {
  set.seed(17)
  lr <- c(stats::rnorm(995), rep(-Inf, 5))
  expect_true(is.finite(svir_psis_khat(lr)))
})

test_that("the k-hat message reads the thresholds 0.5 and 0.7", {
  expect_match(svir_khat_message(0.3), "^0.30 \\(good")
  expect_match(svir_khat_message(0.6), "^0.60 \\(ok")
  expect_match(svir_khat_message(0.9), "poor fit for the joint posterior: treat intervals as approximate")
})
