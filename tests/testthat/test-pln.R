# The Poisson-lognormal model (issue 5, first increment: dense counts,
# variational EM on the CPU). See R/pln.R and src/svir_pln.c.

pln_sim <- function(n, p, Sigma, seed, depth_sd = 0.3, scale = 1) {
  set.seed(seed)
  x <- rnorm(n)
  B <- rbind(runif(p, 0.5, 1.5), runif(p, -0.5, 0.5))
  Z <- cbind(1, x) %*% B + matrix(rnorm(n * p), n) %*% chol(Sigma)
  depth <- scale * exp(rnorm(n, 0, depth_sd))
  d <- data.frame(x = x, depth = depth)
  d$Y <- matrix(rpois(n * p, depth * exp(Z)), n, dimnames = list(NULL, paste0("sp", seq_len(p))))
  list(d = d, B = B, Sigma = Sigma, Z = Z, x = x)
}

test_that("the PLN objective's gradient is its derivative, for every covariance", {
  set.seed(1)
  n <- 30
  p <- 4
  X <- cbind(1, rnorm(n))
  Y <- matrix(as.double(rpois(n * p, 3)), n, p)
  O <- matrix(rnorm(n * p, 0, 0.1), n, p)
  par <- c(log1p(Y) + rnorm(n * p, 0, 0.1), rep(log(0.3), n * p) + rnorm(n * p, 0, 0.1))
  for (cov in 0:2) {
    dat <- list(Y = Y, O = O, X = X, P = solve(crossprod(X), t(X)), lgy = sum(lgamma(Y + 1)),
                cov = cov, n = n, p = p, d = 2L)
    r <- .Call(C_svir_pln_eval_r, dat, par)
    idx <- c(1, 17, 60, n * p + 3, n * p + 77, 2 * n * p)
    h <- 1e-6
    fd <- vapply(idx, function(k) {
      a <- par
      a[k] <- a[k] + h
      b <- par
      b[k] <- b[k] - h
      (.Call(C_svir_pln_eval_r, dat, a)$J - .Call(C_svir_pln_eval_r, dat, b)$J) / (2 * h)
    }, 0)
    expect_equal(r$grad[idx], fd, tolerance = 1e-6, info = cov)
    # B and Sigma are the closed-form optimum for the given M and S
    M <- matrix(par[seq_len(n * p)], n)
    S2 <- matrix(exp(2 * par[n * p + seq_len(n * p)]), n)
    Bh <- solve(crossprod(X), crossprod(X, M))
    R <- M - X %*% Bh
    V <- (crossprod(R) + diag(colSums(S2))) / n
    V <- switch(cov + 1, V, diag(diag(V)), diag(mean(diag(V)), p))
    expect_equal(r$B, Bh, tolerance = 1e-10)
    expect_equal(r$Sigma, V, tolerance = 1e-10)
  }
})

test_that("pln() recovers B and a full Sigma (n = 500, p = 50)", {
  p <- 50
  # mean counts about 30: the latent layer is well identified
  s <- pln_sim(500, p, 0.4 * 0.6^abs(outer(1:p, 1:p, "-")), seed = 3, scale = 10)
  fit <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln())
  expect_s3_class(fit, "svi_pln")
  expect_identical(fit$stop_reason, "converged")
  expect_identical(dimnames(coef(fit)), list(c("(Intercept)", "x"), paste0("sp", 1:p)))
  expect_lt(max(abs(coef(fit) - s$B)), 0.2)
  # Sigma: within twice the error of the covariance of the true latent
  # residuals (what one could estimate if Z were observed)
  oracle <- crossprod(s$Z - cbind(1, s$x) %*% s$B) / 500
  err <- norm(sigma(fit) - s$Sigma, "F")
  expect_lt(err, 2 * norm(oracle - s$Sigma, "F"))
  expect_gt(cor(sigma(fit)[upper.tri(s$Sigma)], s$Sigma[upper.tri(s$Sigma)]), 0.8)
  # the neighbours' covariance, 0.4 * 0.6 = 0.24, as the oracle sees it
  expect_lt(abs(mean(diag(sigma(fit)[-1, -p])) - mean(diag(oracle[-1, -p]))), 0.03)
  expect_true(all(abs(diag(sigma(fit)) / diag(s$Sigma) - 1) < 0.35))
  # the ELBO went up at every iteration, and fitted() are expected counts
  expect_true(all(diff(fit$trace) > 0))
  expect_equal(fit$elbo, fit$trace[length(fit$trace)])
  expect_equal(dim(fitted(fit)), c(500L, p))
  expect_true(all(fitted(fit) > 0))
  expect_output(print(fit), "Poisson-lognormal")
  # with mean counts about 3 the variational estimate attenuates the
  # covariances (q(Z_i) has no correlations), as PLNmodels' does: the same
  # objective (dev/PLN.md); they are still clearly there
  s1 <- pln_sim(500, p, s$Sigma, seed = 3)
  f1 <- svi_fit(Y ~ x + offset(log(depth)), s1$d, family = pln())
  nb <- mean(diag(sigma(f1)[-1, -p]))
  expect_true(nb > 0.5 * 0.24 && nb < 0.24)
  expect_lt(max(abs(coef(f1) - s1$B)), 0.2)
})

test_that("pln() with a diagonal or spherical covariance", {
  p <- 20
  s <- pln_sim(300, p, diag(seq(0.2, 0.6, length.out = p)), seed = 4)
  fd <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(covariance = "diagonal"))
  expect_lt(max(abs(coef(fd) - s$B)), 0.2)
  expect_true(all(sigma(fd)[upper.tri(sigma(fd))] == 0))
  expect_lt(max(abs(diag(sigma(fd)) - diag(s$Sigma))), 0.15)
  fs <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(covariance = "spherical"))
  expect_equal(unname(diag(sigma(fs))), rep(sigma(fs)[1, 1], p))
  expect_lt(abs(sigma(fs)[1, 1] - mean(diag(s$Sigma))), 0.1)
  # the more flexible covariance reaches the higher ELBO
  expect_gt(fd$elbo, fs$elbo)
})

test_that("pln() takes offsets per row or per count, and the response in data or the formula", {
  s <- pln_sim(80, 3, diag(3) * 0.3, seed = 5)
  d <- s$d
  a <- svi_fit(Y ~ x + offset(log(depth)), d, family = pln(covariance = "diagonal"))
  O <- matrix(log(d$depth), 80, 3)
  b <- svi_fit(Y ~ x + offset(O), d, family = pln(covariance = "diagonal"))
  expect_equal(coef(a), coef(b))
  Ycounts <- d$Y
  c2 <- svi_fit(Ycounts ~ x + offset(log(depth)), d, family = pln(covariance = "diagonal"))
  expect_equal(unname(coef(a)), unname(coef(c2)))
})

test_that("pln() refuses bad input with clear errors", {
  s <- pln_sim(40, 3, diag(3) * 0.3, seed = 6)
  d <- s$d
  bad <- d
  bad$Y[1, 1] <- -1
  expect_error(svi_fit(Y ~ x, bad, family = pln()), "non-negative whole", class = "svir_error")
  bad$Y[1, 1] <- 1.5
  expect_error(svi_fit(Y ~ x, bad, family = pln()), "non-negative whole", class = "svir_error")
  bad <- d
  bad$Y[, 2] <- 0
  expect_error(svi_fit(Y ~ x, bad, family = pln()), "all-zero", class = "svir_error")
  O <- matrix(0, 40, 2)
  expect_error(svi_fit(Y ~ x + offset(O), d, family = pln()), "offset", class = "svir_error")
  bad <- d
  bad$depth[3] <- 0
  expect_error(svi_fit(Y ~ x + offset(log(depth)), bad, family = pln()), "positive",
               class = "svir_error")
  wide <- data.frame(x = rnorm(10))
  wide$Y <- matrix(rpois(10 * 12, 3), 10)
  expect_error(svi_fit(Y ~ x, wide, family = pln()), "diagonal", class = "svir_error")
  expect_error(pln(rank = 3), "not available", class = "svir_error")
  expect_error(pln(covariance = "banded"), "covariance", class = "svir_error")
  expect_error(svi_fit(Y ~ x, d, family = pln(), method = "qem"), "not available",
               class = "svir_error")
  expect_error(svi_fit(Y ~ x + (1 | g), d, family = pln()), "random-effect",
               class = "svir_error")
  expect_error(svi_fit(x ~ 1, d, family = pln()), "count matrix", class = "svir_error")
  Ysp <- Matrix::Matrix(d$Y, sparse = TRUE)
  expect_error(svi_fit(Ysp ~ x, d, family = pln()), "Sparse", class = "svir_error")
})

test_that("pln() fits do not depend on the number of threads", {
  s <- pln_sim(150, 6, 0.3 * 0.5^abs(outer(1:6, 1:6, "-")), seed = 7)
  fits <- lapply(1:2, function(th)
    svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(),
            control = svi_control(threads = th)))
  expect_identical(fits[[1]]$elbo, fits[[2]]$elbo)
  expect_identical(coef(fits[[1]]), coef(fits[[2]]))
  expect_identical(sigma(fits[[1]]), sigma(fits[[2]]))
})

test_that("pln_cor() gives the correlations and partial correlations of Sigma", {
  s <- pln_sim(200, 4, 0.4 * 0.6^abs(outer(1:4, 1:4, "-")), seed = 8, scale = 10)
  fit <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln())
  S <- sigma(fit)
  C <- pln_cor(fit)
  expect_equal(C, S / sqrt(outer(diag(S), diag(S))))
  P <- pln_cor(fit, partial = TRUE)
  O <- solve(S)
  expect_equal(P[1, 3], -O[1, 3] / sqrt(O[1, 1] * O[3, 3]))
  expect_equal(unname(diag(P)), rep(1, 4))
  expect_identical(dimnames(P), dimnames(S))
  # an AR(1) latent layer: the neighbours are partially correlated, the
  # others (conditionally independent) much less
  expect_gt(min(P[cbind(1:3, 2:4)]), 0.3)
  expect_lt(max(abs(P[cbind(1:2, 3:4)])), 0.2)
  # a diagonal covariance has no correlations at all
  fd <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(covariance = "diagonal"))
  expect_equal(unname(pln_cor(fd, partial = TRUE)), diag(4))
  expect_error(pln_cor(lm(1 ~ 1)), "pln", class = "svir_error")
})
