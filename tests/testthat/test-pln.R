# The Poisson-lognormal model (issue 5, first increment: dense counts,
# variational EM on the CPU). See R/pln.R and src/models/pln/.

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
  # cases 3:5: globals = "bayes" with Sigma's prior (n - d + k0 and s0 I,
  # spherical (tr C + s0) / ((n - d + k0) p))
  for (case in 0:5) {
    cov <- case %% 3L
    prior <- case >= 3L
    k0 <- if (prior) c(p + 1, 2, 2 / p)[cov + 1L] else 0
    s0 <- if (prior) 0.7 else 0
    nd <- if (prior) n - 2 else n
    dat <- list(Y = Y, O = O, X = X, P = solve(crossprod(X), t(X)), lgy = sum(lgamma(Y + 1)),
                cov = cov, n = n, p = p, d = 2L, nd = nd, k0 = k0, s0 = s0)
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
    expect_equal(r$grad[idx], fd, tolerance = 1e-6, info = case)
    # B and Sigma are the closed-form optimum for the given M and S
    M <- matrix(par[seq_len(n * p)], n)
    S2 <- matrix(exp(2 * par[n * p + seq_len(n * p)]), n)
    Bh <- solve(crossprod(X), crossprod(X, M))
    R <- M - X %*% Bh
    C <- crossprod(R) + diag(colSums(S2))
    V <- switch(cov + 1, (C + diag(s0, p)) / (nd + k0), diag(diag(C) + s0) / (nd + k0),
                diag((sum(diag(C)) + s0) / ((nd + k0) * p), p))
    expect_equal(r$B, Bh, tolerance = 1e-10)
    expect_equal(r$Sigma, V, tolerance = 1e-10, info = case)
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
  expect_error(pln(rank = 0), "positive whole", class = "svir_error")
  expect_error(pln(rank = 1.5), "positive whole", class = "svir_error")
  expect_error(svi_fit(Y ~ x, d, family = pln(rank = 3)), "less than", class = "svir_error")
  expect_error(pln(globals = "full"), "globals", class = "svir_error")
  expect_error(pln(covariance = "banded"), "covariance", class = "svir_error")
  expect_error(svi_fit(Y ~ x, d, family = pln(), method = "qem"), "rank",
               class = "svir_error")
  expect_error(svi_fit(Y ~ x + (1 | g), d, family = pln()), "random-effect",
               class = "svir_error")
  expect_error(svi_fit(x ~ 1, d, family = pln()), "count matrix", class = "svir_error")
  # sparse responses: the same checks, and the rows must match
  Ysp <- Matrix::Matrix(d$Y, sparse = TRUE)
  Ysp@x[1] <- 0.5
  expect_error(svi_fit(Ysp ~ x, d, family = pln()), "non-negative whole", class = "svir_error")
  Ysp <- Matrix::Matrix(d$Y[-1, ], sparse = TRUE)
  expect_error(svi_fit(Ysp ~ x, d, family = pln()), "rows", class = "svir_error")
  Ysp <- Matrix::Matrix(cbind(d$Y, 0), sparse = TRUE)
  expect_error(svi_fit(Ysp ~ x, d, family = pln()), "all-zero", class = "svir_error")
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

test_that("the rank-q, VE-step and Bayes objectives' gradients are their derivatives", {
  set.seed(9)
  n <- 30
  p <- 6
  q <- 2
  X <- cbind(1, rnorm(n))
  Y <- matrix(as.double(rpois(n * p, 3)), n, p)
  O <- matrix(rnorm(n * p, 0, 0.1), n, p)
  base <- list(Y = Y, O = O, X = X, P = solve(crossprod(X), t(X)), lgy = sum(lgamma(Y + 1)),
               n = n, p = p, d = 2L)
  par <- c(log1p(Y) + rnorm(n * p, 0, 0.1), rep(log(0.3), n * p) + rnorm(n * p, 0, 0.1))
  ev <- function(dat, par) .Call(C_svir_pln_eval_r, dat, par)
  fd <- pln_fd_grad
  M <- matrix(par[seq_len(n * p)], n)
  S2 <- matrix(exp(2 * par[n * p + seq_len(n * p)]), n)
  local <- sum(Y * (O + M) - exp(O + M + S2 / 2) - lgamma(Y + 1) + log(S2) / 2) + n * p / 2
  # rank q: Sigma = W W' + diag(psi), with nd = n - d (globals = "bayes")
  dat <- c(base, list(cov = 3L, q = q, nd = n - 2))
  W <- matrix(rnorm(p * q, 0, 0.4), p)
  lpsi <- log(runif(p, 0.2, 0.5))
  pr <- c(par, W, lpsi)
  r <- ev(dat, pr)
  idx <- c(1, 17, 60, n * p + 3, n * p + 77, 2 * n * p + seq_len(p * (q + 1)))
  expect_equal(r$grad[idx], fd(dat, pr, idx), tolerance = 1e-6)
  Sig <- tcrossprod(W) + diag(exp(lpsi))
  R <- M - X %*% solve(crossprod(X), crossprod(X, M))
  C <- crossprod(R) + diag(colSums(S2))
  expect_equal(r$Sigma, Sig, tolerance = 1e-12)
  expect_equal(r$J, local - (n - 2) / 2 * as.numeric(determinant(Sig)$modulus) -
                 sum(diag(solve(Sig, C))) / 2, tolerance = 1e-10)
  # the VE step: B and Omega fixed
  Bf <- matrix(rnorm(2 * p), 2)
  Om <- solve(0.3 * 0.5^abs(outer(1:p, 1:p, "-")))
  datf <- c(base, list(cov = 0L, Bfix = Bf, Omfix = Om,
                       logdet_om = as.numeric(determinant(Om)$modulus)))
  rf <- ev(datf, par)
  idx <- c(1, 17, 60, n * p + 3, n * p + 77, 2 * n * p)
  expect_length(rf$grad, 2 * n * p)
  expect_equal(rf$grad[idx], fd(datf, par, idx), tolerance = 1e-6)
  Rf <- M - X %*% Bf
  expect_equal(rf$J, local + n / 2 * as.numeric(determinant(Om)$modulus) -
                 sum(diag(Om %*% (crossprod(Rf) + diag(colSums(S2))))) / 2, tolerance = 1e-10)
  # the VE step with a rank-q Sigma held (W, log psi; Omega by Woodbury):
  # the same objective as with Omega = Sigma^-1 given in full
  datw <- c(base, list(cov = 3L, q = q, Bfix = Bf, Wfix = W, lpsifix = lpsi))
  rw <- ev(datw, par)
  Omw <- solve(Sig)
  ro <- ev(c(base, list(cov = 0L, Bfix = Bf, Omfix = Omw,
                        logdet_om = as.numeric(determinant(Omw)$modulus))), par)
  expect_equal(rw$J, ro$J, tolerance = 1e-11)
  expect_equal(rw$grad, ro$grad, tolerance = 1e-11)
  # nd = n - d with a profiled Sigma: Sigma = C / (n - d)
  for (cov in 0:2) {
    rb <- ev(c(base, list(cov = cov, nd = n - 2)), par)
    V <- C / (n - 2)
    V <- switch(cov + 1, V, diag(diag(V)), diag(mean(diag(V)), p))
    expect_equal(rb$Sigma, V, tolerance = 1e-10)
    expect_equal(rb$grad[idx], fd(c(base, list(cov = cov, nd = n - 2)), par, idx),
                 tolerance = 1e-6)
  }
  # sparse counts and one offset per row give the same objective
  Ysp <- Matrix::Matrix(Y, sparse = TRUE)
  for (cov in c(0L, 3L)) {
    d1 <- c(base, list(cov = cov, q = q))
    d1$O <- matrix(O[, 1], n, p)
    d2 <- d1
    d2$Y <- NULL
    d2[c("Yp", "Yi", "Yx")] <- list(Ysp@p, Ysp@i, Ysp@x)
    d2$O <- NULL
    d2$Orow <- O[, 1]
    pp <- if (cov == 3L) pr else par
    a <- ev(d1, pp)
    b <- ev(d2, pp)
    expect_equal(a$J, b$J, tolerance = 1e-13)
    expect_equal(a$grad, b$grad, tolerance = 1e-13)
  }
})

test_that("the objective in BLAS pieces (with interrupt polls between them) is the one-call objective", {
  # pieces of 1000 flops: 64 rows per product and blocks of 32 columns in
  # Sigma's Cholesky inverse (src/models/pln/pln_blas.c), against the
  # default size, at which these problems make one call each
  set.seed(4)
  n <- 300
  p <- 70
  d <- 10L
  q <- 3L
  X <- cbind(1, matrix(rnorm(n * (d - 1)), n))
  Y <- matrix(as.double(rpois(n * p, 3)), n, p)
  O <- matrix(rnorm(n * p, 0, 0.1), n, p)
  base <- list(Y = Y, O = O, X = X, P = solve(crossprod(X), t(X)), lgy = sum(lgamma(Y + 1)),
               n = n, p = p, d = d)
  par <- c(log1p(Y) + rnorm(n * p, 0, 0.3), rep(log(0.3), n * p) + rnorm(n * p, 0, 0.1))
  W <- matrix(rnorm(p * q, 0, 0.4), p)
  lpsi <- log(runif(p, 0.2, 0.5))
  Om <- solve(0.3 * 0.5^abs(outer(1:p, 1:p, "-")))
  Bf <- matrix(rnorm(d * p, 0, 0.2), d)
  cases <- list(
    full = list(c(base, list(cov = 0L)), par),
    full_bayes = list(c(base, list(cov = 0L, nd = n - d, k0 = p + 1, s0 = 1)), par),
    diagonal = list(c(base, list(cov = 1L)), par),
    diagonal_bayes = list(c(base, list(cov = 1L, nd = n - d, k0 = 2, s0 = 1)), par),
    rank = list(c(base, list(cov = 3L, q = q)), c(par, W, lpsi)),
    ve_full = list(c(base, list(cov = 0L, Bfix = Bf, Omfix = Om,
                                logdet_om = as.numeric(determinant(Om)$modulus))), par),
    ve_rank = list(c(base, list(cov = 3L, q = q, Bfix = Bf, Wfix = W, lpsifix = lpsi)), par))
  one <- lapply(cases, function(k) .Call(C_svir_pln_eval_r, k[[1]], k[[2]]))
  old <- .Call(C_svir_pln_blas_flops_r, 1000)
  on.exit(.Call(C_svir_pln_blas_flops_r, old), add = TRUE)
  pieces <- lapply(cases, function(k) .Call(C_svir_pln_eval_r, k[[1]], k[[2]]))
  .Call(C_svir_pln_blas_flops_r, old)
  for (nm in names(cases)) {
    expect_equal(pieces[[nm]]$J, one[[nm]]$J, tolerance = 1e-12, info = nm)
    expect_equal(pieces[[nm]]$grad, one[[nm]]$grad, tolerance = 1e-10, info = nm)
    expect_equal(pieces[[nm]]$B, one[[nm]]$B, tolerance = 1e-10, info = nm)
    expect_equal(pieces[[nm]]$Sigma, one[[nm]]$Sigma, tolerance = 1e-12, info = nm)
  }
  # the blocked inverse is Sigma's inverse: the full covariance's gradient
  # in M is Y - A - R Sigma^-1 (A from the same M and S)
  M <- matrix(par[seq_len(n * p)], n)
  S2 <- matrix(exp(2 * par[n * p + seq_len(n * p)]), n)
  R <- M - X %*% one$full$B
  A <- exp(O + M + S2 / 2)
  expect_equal(matrix(pieces$full$grad[seq_len(n * p)], n), Y - A - R %*% solve(one$full$Sigma),
               tolerance = 1e-9)
  # with d > 8 the diagonal Sigma is not fused with the columns' pass: the
  # prior's closed form there too
  expect_equal(diag(one$diagonal_bayes$Sigma), (colSums(R^2) + colSums(S2) + 1) / (n - d + 2),
               tolerance = 1e-10)
  expect_equal(one$full_bayes$Sigma, (crossprod(R) + diag(colSums(S2)) + diag(p)) / (n - d + p + 1),
               tolerance = 1e-10)
  # a minibatch fit with the batch's SYRK and the M step's inverse in
  # pieces: the same fit
  # pieces (rounding apart; SQUAREM's extrapolations amplify it to about
  # 1e-10 of the ELBO)
  dd <- list(Y = matrix(rpois(400 * 40, 4), 400, 40))
  ctl <- svi_control(batch_size = 100, progress = FALSE, max_steps = 60)
  f1 <- suppressWarnings(svi_fit(Y ~ 1, dd, family = pln(), control = ctl, seed = 1))
  .Call(C_svir_pln_blas_flops_r, 1000)
  f2 <- suppressWarnings(svi_fit(Y ~ 1, dd, family = pln(), control = ctl, seed = 1))
  .Call(C_svir_pln_blas_flops_r, old)
  expect_identical(f2$epochs, f1$epochs)
  expect_equal(f2$trace, f1$trace, tolerance = 1e-9)
  expect_equal(f2$sigma, f1$sigma, tolerance = 1e-7)
  # and not by chance: another batch order gives another fit
  f3 <- suppressWarnings(svi_fit(Y ~ 1, dd, family = pln(), control = ctl, seed = 2))
  expect_gt(max(abs(f3$trace - f1$trace)), 1e-3)
})

test_that("the starts' products in blocks of rows are the one-call products", {
  set.seed(5)
  A <- matrix(rnorm(300 * 20), 300)
  B <- matrix(rnorm(300 * 4), 300)
  V <- matrix(rnorm(20 * 3), 20)
  # 1000 flops: blocks of 64 rows (5 blocks, the last of 44)
  expect_length(svir:::svir_blocks(300, 200, 1000), 5)
  expect_equal(svir:::svir_prod_rows(A, V, 1000), A %*% V, tolerance = 1e-14)
  expect_equal(svir:::svir_cross_rows(A, B, 1000), crossprod(A, B), tolerance = 1e-13)
  expect_equal(svir:::svir_cross_rows(A, flops = 1000), crossprod(A), tolerance = 1e-13)
  expect_equal(svir:::svir_colsq(A, 1000), colSums(A^2), tolerance = 1e-13)
  # sparse: one call
  As <- Matrix::Matrix(A * (abs(A) > 1), sparse = TRUE)
  expect_equal(svir:::svir_prod_rows(As, V), as.matrix(As %*% V), tolerance = 1e-14)
  expect_equal(svir:::svir_cross_rows(As, B), as.matrix(Matrix::crossprod(As, B)), tolerance = 1e-14)
})

pln_rank_sim <- function(n, p, q, seed, scale = 10) {
  set.seed(seed)
  W <- matrix(rnorm(p * q, 0, 0.35), p)
  Sigma <- tcrossprod(W) + diag(runif(p, 0.05, 0.15))
  x <- rnorm(n)
  B <- rbind(runif(p, 0.5, 1.5), runif(p, -0.5, 0.5))
  Z <- cbind(1, x) %*% B + matrix(rnorm(n * p), n) %*% chol(Sigma)
  depth <- scale * exp(rnorm(n, 0, 0.3))
  d <- data.frame(x = x, depth = depth)
  d$Y <- matrix(rpois(n * p, depth * exp(Z)), n, dimnames = list(NULL, paste0("g", seq_len(p))))
  list(d = d, B = B, Sigma = Sigma, Z = Z, x = x)
}

test_that("pln(rank = 5, residual = TRUE) recovers B and Sigma (n = 500, p = 50), and BIC picks the rank", {
  s <- pln_rank_sim(500, 50, 5, seed = 11)
  fit <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(rank = 5, residual = TRUE))
  expect_identical(fit$stop_reason, "converged")
  expect_lt(max(abs(coef(fit) - s$B)), 0.2)
  oracle <- crossprod(s$Z - cbind(1, s$x) %*% s$B) / 500
  expect_lt(norm(sigma(fit) - s$Sigma, "F"), 1.25 * norm(oracle - s$Sigma, "F"))
  expect_equal(sigma(fit), tcrossprod(fit$loadings) + diag(fit$psi), ignore_attr = TRUE)
  expect_equal(dim(fit$loadings), c(50L, 5L))
  expect_true(all(diff(fit$trace) > 0))
  expect_output(print(fit), "rank 5 + diagonal", fixed = TRUE)
  # the ELBO is higher than a rank-2 fit's; BIC (larger is better) prefers
  # rank 5 to ranks 2 and 8 and to the full covariance
  f2 <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(rank = 2, residual = TRUE))
  f8 <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(rank = 8, residual = TRUE))
  ff <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln())
  expect_gt(fit$elbo, f2$elbo)
  crit <- pln_criteria(f2, fit, f8, ff)
  expect_identical(which.max(crit$BIC), 2L)
  # the rank-5 latent positions carry the latent layer: the true latent
  # residuals' leading principal components are linear in them
  sc <- scores(fit, axes = 5)
  expect_equal(dim(sc), c(500L, 5L))
  pcs <- stats::prcomp(s$Z - cbind(1, s$x) %*% s$B)$x[, 1:3]
  r2 <- apply(pcs, 2, function(y) summary(stats::lm(y ~ sc))$r.squared)
  expect_true(all(r2 > 0.8))
})

test_that("a sparse count matrix gives the fit of the dense one", {
  s <- pln_sim(120, 8, 0.3 * 0.5^abs(outer(1:8, 1:8, "-")), seed = 12)
  Yd <- s$d$Y
  Yd[sample(length(Yd), 300)] <- 0
  Ysp <- Matrix::Matrix(Yd, sparse = TRUE)
  expect_s4_class(Ysp, "dgCMatrix")
  d <- s$d
  for (fam in list(pln(), pln(rank = 2), pln(covariance = "diagonal"))) {
    a <- svi_fit(Yd ~ x + offset(log(depth)), d, family = fam)
    b <- svi_fit(Ysp ~ x + offset(log(depth)), d, family = fam)
    expect_equal(b$elbo, a$elbo, tolerance = 1e-10)
    expect_equal(coef(b), coef(a), tolerance = 1e-10)
    expect_equal(sigma(b), sigma(a), tolerance = 1e-10)
    expect_s4_class(b$Y, "dgCMatrix")
  }
  # a triplet-form sparse matrix is converted, and rows dropped for missing
  # covariates are dropped from the counts
  d$x[3] <- NA
  c1 <- svi_fit(methods::as(Ysp, "TsparseMatrix") ~ x + offset(log(depth)), d,
                family = pln(covariance = "diagonal"))
  d2 <- d[-3, ]
  d2$Y <- Yd[-3, ]
  c2 <- svi_fit(Y ~ x + offset(log(depth)), d2, family = pln(covariance = "diagonal"))
  expect_equal(c1$elbo, c2$elbo, tolerance = 1e-10)
})

test_that("globals = 'bayes' gives B and Sigma a posterior with the right ELBO", {
  s <- pln_sim(40, 3, diag(3) * 0.3, seed = 13)
  fp <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln())
  fb <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(globals = "bayes"))
  # the posterior's larger variances lower the latent means a little (E
  # exp(Z) = exp(mean + var / 2) is held by the counts)
  expect_lt(max(abs(coef(fb) - coef(fp))), 0.1)
  expect_true(all(diag(sigma(fb)) > diag(sigma(fp))))
  expect_output(print(fb), "posterior for B and Sigma")
  X <- cbind(1, s$x)
  O <- log(s$d$depth)
  Y <- s$d$Y
  n <- 40
  p <- 3
  d <- 2
  # log densities of the inverse-Wishart and the inverse-gamma
  ldiw <- function(S, nu, Psi) {
    nu / 2 * as.numeric(determinant(Psi)$modulus) - nu * p / 2 * log(2) -
      svir:::svir_lmvgamma(nu / 2, p) - (nu + p + 1) / 2 * as.numeric(determinant(S)$modulus) -
      sum(diag(Psi %*% solve(S))) / 2
  }
  ldig <- function(v, a, b) a * log(b) - lgamma(a) - (a + 1) * log(v) - b / v
  for (cv in c("full", "diagonal", "spherical")) {
    f <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(globals = "bayes", covariance = cv))
    K <- f$sigma
    q <- f$sigma_post
    pr <- f$sigma_prior
    # K, Sigma's posterior mean, is the closed form from the latent
    # residuals and the prior, (C + I) / (n - d) with the default df = p + 1
    R <- f$M - X %*% coef(f)
    C <- crossprod(R) + diag(colSums(f$S^2))
    expect_equal(unname(K), unname(switch(cv, full = (C + diag(p)) / (n - d),
                                          diagonal = diag(diag(C) + 1) / (n - d),
                                          spherical = diag((sum(diag(C)) + 1) / ((n - d) * p), p))),
                 tolerance = 1e-8, info = cv)
    expect_equal(sigma(f), K)
    # the ELBO by Monte Carlo over q(Sigma), q(B) (matrix normal, column
    # covariance K) and q(Z), with a flat prior on B and Sigma's prior
    set.seed(1)
    Lx <- t(chol(f$XtXinv))
    Lk <- t(chol(K))
    vals <- vapply(seq_len(3000), function(k) {
      if (cv == "full") {
        Psi <- K * (q$df - p - 1)
        Sg <- solve(stats::rWishart(1, q$df, solve(Psi))[, , 1])
        lps <- ldiw(Sg, pr$df, diag(pr$scale, p))
        lqs <- ldiw(Sg, q$df, Psi)
      } else {
        v <- 1 / stats::rgamma(if (cv == "diagonal") p else 1, q$shape[1], q$rate[seq_len(if (cv == "diagonal") p else 1)])
        Sg <- diag(v, p)
        lps <- sum(ldig(v, pr$shape, pr$scale / 2))
        lqs <- sum(ldig(v, q$shape[1], q$rate[seq_along(v)]))
      }
      Eb <- matrix(rnorm(d * p), d)
      Bk <- coef(f) + Lx %*% Eb %*% t(Lk)
      lqb <- -d * p / 2 * log(2 * pi) - d / 2 * as.numeric(determinant(K)$modulus) -
        p / 2 * as.numeric(determinant(f$XtXinv)$modulus) - sum(Eb^2) / 2
      Ez <- matrix(rnorm(n * p), n)
      Zk <- f$M + f$S * Ez
      eta <- O + Zk
      Rk <- Zk - X %*% Bk
      lpz <- -n * p / 2 * log(2 * pi) - n / 2 * as.numeric(determinant(Sg)$modulus) -
        sum((Rk %*% solve(Sg)) * Rk) / 2
      sum(Y * eta - exp(eta) - lgamma(Y + 1)) + lpz + lps -
        sum(dnorm(Ez, log = TRUE) - log(f$S)) - lqb - lqs
    }, 0)
    expect_lt(abs(mean(vals) - f$elbo), 4 * sd(vals) / sqrt(3000))
    # the variances' posterior: inverse-gamma means, sds and quantiles
    sp <- pln_sigma_posterior(f, level = 0.9)
    expect_equal(sp$mean, unname(diag(sigma(f))), tolerance = 1e-12)
    v1 <- 1 / stats::rgamma(2e5, q$shape[1], q$rate[1])
    expect_equal(sp$mean[1], mean(v1), tolerance = 0.01)
    expect_equal(sp$sd[1], sd(v1), tolerance = 0.03)
    expect_equal(unname(unlist(sp[1, 3:4])), unname(quantile(v1, c(0.05, 0.95))), tolerance = 0.01)
    expect_identical(names(sp), c("mean", "sd", "5 %", "95 %"))
  }
  # intervals for B: estimate -/+ z sd, sd^2 = [(X'X)^-1]_kk K_jj
  ci <- confint(fb, "x", level = 0.9)
  sd <- sqrt(solve(crossprod(X))[2, 2] * diag(fb$sigma))
  expect_equal(unname(ci[, 1]), unname(coef(fb)[2, ] - qnorm(0.95) * sd))
  expect_identical(rownames(ci), paste0("x:sp", 1:3))
  expect_identical(colnames(ci), c("5 %", "95 %"))
  expect_error(confint(fp), "globals", class = "svir_error")
  expect_error(pln_sigma_posterior(fp), "globals = \"bayes\"", class = "svir_error")
  # the prior's arguments
  expect_error(pln(sigma_df = -1), "sigma_df", class = "svir_error")
  expect_error(pln(sigma_scale = 0), "sigma_scale", class = "svir_error")
  expect_error(svi_fit(Y ~ x, s$d, family = pln(globals = "bayes", sigma_df = 1.5)), "more than",
               class = "svir_error")
  # a stronger prior scale pulls the variances up; a full Sigma with more
  # columns than rows is proper under the prior
  f9 <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(globals = "bayes", sigma_scale = 9))
  expect_true(all(diag(sigma(f9)) > diag(sigma(fb))))
  # sigma_df between p - 1 and p + 1 (k0 = df - p - 1 negative): the closed
  # form (C + I) / (n - d - 1) at df = p
  f3 <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(globals = "bayes", sigma_df = 3))
  R3 <- f3$M - X %*% coef(f3)
  expect_equal(unname(sigma(f3)), unname((crossprod(R3) + diag(colSums(f3$S^2)) + diag(3)) / 37),
               tolerance = 1e-8)
  s2 <- pln_sim(12, 15, diag(15) * 0.3, seed = 14)
  expect_error(svi_fit(Y ~ x, s2$d, family = pln()), "more than 15 rows", class = "svir_error")
  f2 <- svi_fit(Y ~ x, s2$d, family = pln(globals = "bayes"))
  expect_true(all(eigen(sigma(f2), only.values = TRUE)$values > 0))
  # minibatches reach the full-batch fit's fixed point with the prior too
  s3 <- pln_sim(200, 4, diag(4) * 0.3, seed = 15)
  c1 <- svi_control(progress = FALSE)
  c1$pln_tol <- 1e-10
  c2 <- svi_control(batch_size = 50, progress = FALSE, max_steps = 4000)
  c2$pln_tol <- 1e-10
  g1 <- svi_fit(Y ~ x + offset(log(depth)), s3$d, family = pln(globals = "bayes"), control = c1)
  g2 <- suppressWarnings(svi_fit(Y ~ x + offset(log(depth)), s3$d, family = pln(globals = "bayes"),
                                 control = c2, seed = 1))
  expect_equal(sigma(g2), sigma(g1), tolerance = 1e-3)
  expect_equal(g2$elbo, g1$elbo, tolerance = 1e-5)
})

test_that("pln_offsets() computes total-count and geometric-mean offsets, dense or sparse", {
  set.seed(14)
  Y <- matrix(rpois(200, 8), 20)
  expect_equal(pln_offsets(Y), log(rowSums(Y)))
  # DESeq's median of ratios when no count is zero, scaled to geometric mean 1
  g <- exp(colMeans(log(Y)))
  sf <- apply(sweep(Y, 2, g, "/"), 1, median)
  expect_equal(pln_offsets(Y, "rle"), log(sf) - mean(log(sf)))
  Y[sample(200, 60)] <- 0
  Y[1, ] <- c(3, rep(0, 9))
  Ysp <- Matrix::Matrix(Y, sparse = TRUE)
  expect_equal(pln_offsets(Ysp), pln_offsets(Y))
  expect_equal(pln_offsets(Ysp, "rle"), pln_offsets(Y, "rle"))
  # poscounts: the zeros are left out of the geometric means and the medians
  gp <- apply(Y, 2, function(y) exp(mean(log(y[y > 0]))))
  r1 <- median(Y[2, Y[2, ] > 0] / gp[Y[2, ] > 0])
  o <- pln_offsets(Y, "rle")
  sfs <- vapply(1:20, function(i) median(Y[i, Y[i, ] > 0] / gp[Y[i, ] > 0]), 0)
  expect_equal(o, log(sfs) - mean(log(sfs)))
  expect_equal(unname(o[2] + mean(log(sfs))), log(r1))
  Y[5, ] <- 0
  expect_error(pln_offsets(Y), "no counts", class = "svir_error")
  expect_error(pln_offsets(Y, "tss"), "type", class = "svir_error")
})

test_that("predict() with new counts runs the VE step with the fit's B and Sigma", {
  s <- pln_sim(150, 5, 0.3 * 0.5^abs(outer(1:5, 1:5, "-")), seed = 15)
  fit <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln())
  # on the training rows the VE step returns the fit's own q(Z)
  pr <- predict(fit, newdata = s$d[1:10, ], responses = s$d$Y[1:10, ])
  expect_equal(unname(pr), unname(fitted(fit)[1:10, ]), tolerance = 1e-3)
  # conditioning on the counts moves a row towards them
  y <- s$d$Y[1:10, ]
  y[, 1] <- y[, 1] * 5 + 20
  p2 <- predict(fit, newdata = s$d[1:10, ], responses = y)
  expect_true(all(p2[, 1] > pr[, 1]))
  # and, through the correlation, column 2 too (Sigma_12 > 0)
  expect_gt(mean(p2[, 2] / pr[, 2]), 1)
})

test_that("minibatches of rows reach the full-batch fit (streamed variational EM)", {
  s <- pln_rank_sim(300, 20, 3, seed = 16)
  for (fam in list(pln(), pln(covariance = "diagonal"), pln(rank = 3, residual = TRUE))) {
    full <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = fam)
    mb <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = fam,
                  control = svi_control(batch_size = 64), seed = 2)
    expect_identical(mb$stop_reason, "converged")
    expect_identical(mb$batch_size, 64L)
    expect_gt(mb$epochs, 2L)
    # the ELBO of each epoch is exact; the last epochs are exact EM steps,
    # which never lower it
    expect_true(all(diff(utils::tail(mb$trace, 2)) >= -1e-8 * abs(mb$elbo)))
    expect_equal(mb$elbo, utils::tail(mb$trace, 1))
    expect_equal(mb$elbo, full$elbo, tolerance = 1e-5)
    expect_lte(mb$elbo, full$elbo + 1e-6 * abs(full$elbo))
    expect_lt(max(abs(coef(mb) - coef(full))), 0.01)
    expect_lt(max(abs(sigma(mb) - sigma(full))), if (is.null(fam$rank)) 0.01 else 0.05)
    expect_output(print(mb), "minibatch steps")
    # no n x p latent layer is kept; the verbs fit it when asked, with B
    # and Sigma held, and it agrees with the full-batch fit's
    expect_null(mb$M)
    expect_null(mb$S)
    keep <- mb[setdiff(names(mb), c("Y", "offset", "X", "call", "terms", "formula"))]
    expect_lt(as.numeric(utils::object.size(keep)), 8 * 300 * 20 / 2)
    expect_lt(max(abs(log(fitted(mb)) - log(fitted(full)))), 0.02)
    expect_equal(dim(ranef(mb)), c(300L, 20L))
    crit <- pln_criteria(mb, full)
    expect_equal(crit$ICL[1], crit$ICL[2], tolerance = 1e-3)
    ll <- pln_loglik(mb, nsamples = 50)
    expect_gt(ll$loglik, mb$elbo)
  }
  # the same seed, the same fit; a sparse matrix, the same fit as dense
  Ysp <- Matrix::Matrix(s$d$Y, sparse = TRUE)
  a <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(covariance = "diagonal"),
               control = svi_control(batch_size = 50), seed = 3)
  b <- svi_fit(Ysp ~ x + offset(log(depth)), s$d, family = pln(covariance = "diagonal"),
               control = svi_control(batch_size = 50), seed = 3)
  expect_equal(b$elbo, a$elbo, tolerance = 1e-12)
  expect_equal(coef(b), coef(a), tolerance = 1e-12)
  expect_error(svi_fit(Y ~ x, s$d, family = pln(), control = svi_control(batch_size = 301)),
               "larger than", class = "svir_error")
})

test_that("sparse responses work without data, intercept only", {
  set.seed(17)
  Y <- Matrix::Matrix(matrix(rpois(200, 2), 50), sparse = TRUE)
  a <- svi_fit(Y ~ 1, family = pln(covariance = "diagonal"))
  Yd <- as.matrix(Y)
  b <- svi_fit(Yd ~ 1, family = pln(covariance = "diagonal"))
  expect_equal(a$elbo, b$elbo, tolerance = 1e-10)
  expect_identical(rownames(coef(a)), "(Intercept)")
  expect_error(predict(b, newdata = data.frame(row.names = 1:2),
                       responses = matrix(c(1, NA, 2, 3, 1, 1, 0, 2), 2)),
               "missing", class = "svir_error")
})

test_that("QEM for pln(rank = q) samples the factors and the entries' effects", {
  # mean counts about 30: the latent layer is well identified and QEM's
  # EM-rate convergence is quick (at low counts it is slow: dev/PLN.md)
  set.seed(21)
  n <- 200
  p <- 20
  W <- matrix(rnorm(p * 2, 0, 0.5), p)
  Sig <- tcrossprod(W) + diag(runif(p, 0.05, 0.15))
  x <- rnorm(n)
  B <- rbind(runif(p, 0.5, 1.5), runif(p, -0.5, 0.5))
  Z <- cbind(1, x) %*% B + matrix(rnorm(n * p), n) %*% chol(Sig)
  d <- data.frame(x = x, depth = 10 * exp(rnorm(n, 0, 0.3)))
  d$Y <- matrix(rpois(n * p, d$depth * exp(Z)), n)
  oracle <- crossprod(Z - cbind(1, x) %*% B) / n
  fv <- svi_fit(Y ~ x + offset(log(depth)), d, family = pln(rank = 2, residual = TRUE))
  fq <- svi_fit(Y ~ x + offset(log(depth)), d, family = pln(rank = 2, residual = TRUE), method = "qem",
                control = svi_control(K = 16), seed = 1)
  expect_identical(fq$stop_reason, "converged")
  expect_identical(fq$method, "qem")
  expect_output(print(fq), "QEM")
  # the same estimates as the variational fit, and Sigma as good as the
  # covariance of the true latent residuals
  expect_lt(max(abs(coef(fq) - coef(fv))), 0.1)
  expect_lt(max(abs(coef(fq) - B)), 0.3)
  expect_lt(norm(sigma(fq) - Sig, "F"), 1.5 * norm(oracle - Sig, "F"))
  expect_equal(sigma(fq), tcrossprod(fq$loadings) + diag(fq$psi), ignore_attr = TRUE)
  # log P-hat, a K-sample bound, is above the ELBO, and close to the
  # importance-sampled log-likelihood at QEM's estimates
  expect_gt(fq$elbo, fv$elbo)
  ll <- pln_loglik(fq, nsamples = 300)
  expect_lt(abs(ll$loglik - fq$elbo), 15)
  expect_true(all(fq$ess >= 1 & fq$ess <= 16))
  expect_equal(dim(fitted(fq)), c(n, p))
  # the draws are keyed by row, entry and iteration: threads change nothing
  f1 <- svi_fit(Y ~ x + offset(log(depth)), d[1:60, ], family = pln(rank = 1, residual = TRUE), method = "qem",
                control = svi_control(K = 8, threads = 1), seed = 4)
  f2 <- svi_fit(Y ~ x + offset(log(depth)), d[1:60, ], family = pln(rank = 1, residual = TRUE), method = "qem",
                control = svi_control(K = 8, threads = 2), seed = 4)
  expect_identical(f1$trace, f2$trace)
  expect_identical(coef(f1), coef(f2))
  expect_error(svi_fit(Y ~ x, d, family = pln(rank = 2, residual = TRUE), method = "qem",
                       control = svi_control(batch_size = 10)), "every row", class = "svir_error")
  Ysp <- Matrix::Matrix(d$Y, sparse = TRUE)
  expect_error(svi_fit(Ysp ~ x, d, family = pln(rank = 2, residual = TRUE), method = "qem"), "dense",
               class = "svir_error")
})
