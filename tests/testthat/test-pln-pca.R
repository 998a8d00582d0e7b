# PLN-PCA, pln(rank = q) (issue 15; src/models/pln/pln_pca.c): the latent
# layer in q dimensions, Z_i = X_i B + C w_i, q(w_i) = N(m_i, diag(s_i^2)),
# with no n x p array held.

pca_sim <- function(n, p, q, seed, scale = 10) {
  set.seed(seed)
  x <- rnorm(n)
  C <- matrix(rnorm(p * q, 0, 0.5), p, q)
  B <- rbind(runif(p, 0, 1), runif(p, -0.5, 0.5))
  W <- matrix(rnorm(n * q), n)
  Z <- cbind(1, x) %*% B + W %*% t(C)
  d <- data.frame(x = x, depth = scale * exp(rnorm(n, 0, 0.3)))
  d$Y <- matrix(rpois(n * p, d$depth * exp(Z)), n, dimnames = list(NULL, paste0("sp", 1:p)))
  list(d = d, B = B, C = C, W = W, Sigma = tcrossprod(C))
}

# the objective written out in R
pca_elbo_r <- function(Y, O, X, par, n, p, q, d) {
  nq <- n * q
  M <- matrix(par[seq_len(nq)], n)
  S2 <- matrix(exp(2 * par[nq + seq_len(nq)]), n)
  C <- matrix(par[2 * nq + seq_len(p * q)], p)
  B <- matrix(par[2 * nq + p * q + seq_len(d * p)], d)
  Zb <- O + X %*% B + M %*% t(C)
  A <- exp(Zb + 0.5 * S2 %*% t(C^2))
  sum(Y * Zb - A - lgamma(Y + 1)) + sum(0.5 * log(S2) - 0.5 * (M^2 + S2) + 0.5)
}

test_that("the PLN-PCA objective is the ELBO written out, and its gradient its derivative", {
  set.seed(1)
  n <- 300
  p <- 7
  q <- 2
  d <- 2L
  X <- cbind(1, rnorm(n))
  Y <- matrix(as.double(rpois(n * p, 3)), n, p)
  Y[1:5, ] <- 0
  O <- matrix(rnorm(n * p, 0, 0.1), n, p)
  par <- c(rnorm(n * q, 0, 0.5), rnorm(n * q, log(0.3), 0.1), rnorm(p * q, 0, 0.3),
           rnorm(d * p, 0.5, 0.2))
  ev <- function(dat, x) .Call(C_svir_pln_eval_r, dat, x)
  base <- list(X = X, P = matrix(0, d, n), lgy = sum(lgamma(Y + 1)),
               cov = svir:::svir_codes$pln_cov[["pca"]], q = q, n = n, p = p, d = d)
  Ysp <- Matrix::Matrix(Y, sparse = TRUE)
  Yt <- Matrix::t(Ysp)
  sparse <- list(Yp = Ysp@p, Yi = Ysp@i, Yx = Ysp@x, Rp = Yt@p, Rj = Yt@i, Rx = Yt@x)
  # dense with an n x p offset, in one block and in blocks of 64 rows (five
  # blocks, the last short); sparse with one offset per row
  d1 <- c(base, list(Y = Y, O = O))
  d2 <- c(d1, list(block = 64L))
  d3 <- c(base, sparse, list(Orow = O[, 1]))
  d4 <- c(base, list(Y = Y, Orow = O[, 1], block = 64L))
  r1 <- ev(d1, par)
  expect_equal(r1$J, pca_elbo_r(Y, O, X, par, n, p, q, d), tolerance = 1e-12)
  expect_equal(ev(d2, par)$J, r1$J, tolerance = 1e-12)
  expect_equal(ev(d2, par)$grad, r1$grad, tolerance = 1e-12)
  expect_equal(ev(d3, par)$J, pca_elbo_r(Y, matrix(O[, 1], n, p), X, par, n, p, q, d),
               tolerance = 1e-12)
  expect_equal(ev(d3, par)$grad, ev(d4, par)$grad, tolerance = 1e-12)
  L <- length(par)
  idx <- c(1, 17, 599, n * q + 3, 2 * n * q - 1, 2 * n * q + 1, 2 * n * q + p * q,
           2 * n * q + p * q + 1, L)
  for (dat in list(d2, d3)) {
    expect_equal(ev(dat, par)$grad[idx], pln_fd_grad(dat, par, idx), tolerance = 1e-6)
  }
  # the VE step's objective: B and C held, the factors' parameters only
  C <- matrix(par[2 * n * q + seq_len(p * q)], p)
  B <- matrix(par[2 * n * q + p * q + seq_len(d * p)], d)
  d5 <- c(d4, list(Bfix = B, Wfix = C))
  r5 <- ev(d5, par[seq_len(2 * n * q)])
  expect_length(r5$grad, 2 * n * q)
  expect_equal(r5$J, ev(d4, par)$J, tolerance = 1e-12)
  expect_equal(r5$grad, ev(d4, par)$grad[seq_len(2 * n * q)], tolerance = 1e-12)
})

test_that("pln(rank = q) reaches the ELBO's maximum and recovers B and Sigma = C C'", {
  s <- pca_sim(300, 30, 3, seed = 11)
  ctl <- svi_control(max_steps = 20000)
  ctl$pln_tol <- 1e-13
  fit <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(rank = 3), control = ctl)
  expect_identical(fit$stop_reason, "converged")
  expect_output(print(fit), "rank 3")
  expect_null(fit$M)
  expect_null(fit$S)
  expect_null(fit$psi)
  expect_equal(dim(fit$factors$mean), c(300L, 3L))
  expect_equal(dim(fit$loadings), c(30L, 3L))
  expect_equal(sigma(fit), tcrossprod(fit$loadings), ignore_attr = TRUE)
  expect_identical(dimnames(sigma(fit)), list(paste0("sp", 1:30), paste0("sp", 1:30)))
  # an independent optimiser (R's L-BFGS-B on the same objective, from the
  # true values) finds the same maximum
  n <- 300
  p <- 30
  q <- 3
  Y <- s$d$Y
  storage.mode(Y) <- "double"
  X <- cbind(1, s$d$x)
  dat <- list(Y = Y, Orow = log(s$d$depth), X = X, P = matrix(0, 2, n),
              lgy = sum(lgamma(Y + 1)), cov = svir:::svir_codes$pln_cov[["pca"]], q = q,
              n = n, p = p, d = 2L)
  ev <- function(x) .Call(C_svir_pln_eval_r, dat, x)
  o <- stats::optim(c(s$W, rep(log(0.05), n * q), s$C, s$B), function(x) -ev(x)$J,
                    function(x) -ev(x)$grad, method = "L-BFGS-B",
                    control = list(maxit = 20000, factr = 1, pgtol = 0))
  expect_equal(fit$elbo, -o$value, tolerance = 1e-7)
  Co <- matrix(o$par[2 * n * q + seq_len(p * q)], p)
  expect_lt(max(abs(sigma(fit) - tcrossprod(Co))), 1e-3 * max(abs(tcrossprod(Co))))
  # recovery: B, and Sigma within twice the error of the latent residuals'
  # own covariance
  expect_lt(max(abs(coef(fit) - s$B)), 0.2)
  oracle <- crossprod(s$W %*% t(s$C)) / n
  expect_lt(norm(sigma(fit) - s$Sigma, "F"), 2 * norm(oracle - s$Sigma, "F"))
  # the default tolerance stops earlier, at nearly the same estimates
  f0 <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(rank = 3))
  expect_lt(max(abs(coef(f0) - coef(fit))), 0.05)
  expect_lt(norm(sigma(f0) - sigma(fit), "F"), 0.1 * norm(sigma(fit), "F"))
  # sparse counts give the dense fit
  Ysp <- Matrix::Matrix(s$d$Y, sparse = TRUE)
  fs <- svi_fit(Ysp ~ x + offset(log(depth)), s$d, family = pln(rank = 3))
  expect_equal(fs$elbo, f0$elbo, tolerance = 1e-10)
  expect_equal(coef(fs), coef(f0), tolerance = 1e-10)
})

test_that("PLN-PCA's log-likelihood by importance sampling matches quadrature (q = 1)", {
  s <- pca_sim(40, 6, 1, seed = 12, scale = 2)
  fit <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(rank = 1))
  ll <- pln_loglik(fit, nsamples = 2000, seed = 1)
  # log p(Y_i) = log int prod_j Pois(Y_ij; exp(eta_ij + C_j w)) N(w; 0, 1) dw
  eta <- cbind(1, s$d$x) %*% coef(fit) + log(s$d$depth)
  C <- fit$loadings[, 1]
  Y <- s$d$Y
  exact <- vapply(seq_len(40), function(i) {
    f <- function(w) vapply(w, function(u) exp(sum(stats::dpois(Y[i, ], exp(eta[i, ] + C * u), log = TRUE)) +
                                                 stats::dnorm(u, log = TRUE)), 0)
    log(stats::integrate(f, -10, 10, rel.tol = 1e-10)$value)
  }, 0)
  expect_lt(abs(ll$loglik - sum(exact)), 4 * ll$se + 0.05)
  expect_lt(max(abs(ll$rows - exact)), 0.05)
  # the ELBO is a lower bound
  expect_lt(fit$elbo, sum(exact))
})

test_that("every pln() verb works on a PLN-PCA fit", {
  s <- pca_sim(200, 12, 2, seed = 13)
  fit <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(rank = 2))
  lat <- svir:::svir_pln_latent(fit)
  expect_equal(dim(lat$M), c(200L, 12L))
  expect_equal(fitted(fit), exp(lat$M + lat$S^2 / 2 + log(s$d$depth)), ignore_attr = TRUE)
  re <- ranef(fit)
  expect_equal(dim(attr(re, "postVar")), c(200L, 12L))
  expect_equal(unname(re), unname(tcrossprod(fit$factors$mean, fit$loadings)), tolerance = 1e-12,
               ignore_attr = TRUE)
  # the VE step on the fitted rows reproduces their factors
  pr <- predict(fit, newdata = s$d[1:20, ], responses = s$d$Y[1:20, ])
  expect_lt(max(abs(log(pr) - log(fitted(fit)[1:20, ]))), 0.02)
  un <- predict(fit, newdata = s$d[1:3, ])
  expect_equal(unname(un), unname(exp(cbind(1, s$d$x[1:3]) %*% coef(fit) + log(s$d$depth[1:3]) +
                                        rep(rowSums(fit$loadings^2) / 2, each = 3))))
  sc <- scores(fit, axes = 2)
  expect_equal(dim(sc), c(200L, 2L))
  expect_equal(attr(sc, "variance")$cumulative[2], 1)
  # the scores span the factors
  expect_gt(summary(stats::lm(s$W[, 1] ~ sc))$r.squared, 0.9)
  expect_error(scores(fit, axes = 3), "rank", class = "svir_error")
  sm <- summary(fit)
  expect_output(print(sm), "rank 2")
  # degrees of freedom: B (2 x 12) and C (12 x 2 less the rotation's 1)
  expect_identical(pln_criteria(fit)$df, 2 * 12 + 12 * 2 - 1)
  expect_identical(dim(simulate(fit, seed = 1)[[1]]), c(200L, 12L))
  expect_equal(dim(pln_cor(fit)), c(12L, 12L))
  expect_error(pln_cor(fit, partial = TRUE), "no inverse", class = "svir_error")
  expect_error(vcov(fit), "point estimates", class = "svir_error")
})

test_that("PLN-PCA's start takes one offset per row with an intercept only (d = 1)", {
  s <- pca_sim(80, 6, 2, seed = 16)
  Ysp <- Matrix::Matrix(s$d$Y, sparse = TRUE)
  a <- svi_fit(Y ~ 1 + offset(log(depth)), s$d, family = pln(rank = 2))
  b <- svi_fit(Ysp ~ 1 + offset(log(depth)), s$d, family = pln(rank = 2))
  expect_identical(a$stop_reason, "converged")
  expect_equal(b$elbo, a$elbo, tolerance = 1e-10)
  expect_identical(rownames(coef(a)), "(Intercept)")
})

test_that("PLN-PCA refuses what it does not do, with the fix", {
  s <- pca_sim(60, 5, 1, seed = 14)
  expect_error(pln(rank = 2, globals = "bayes"), "residual = TRUE", class = "svir_error")
  expect_error(pln(residual = TRUE), "Give `rank`", class = "svir_error")
  expect_error(pln(rank = 2, residual = NA), "residual", class = "svir_error")
  expect_error(svi_fit(Y ~ x, s$d, family = pln(rank = 1), method = "qem"), "residual = TRUE",
               class = "svir_error")
  expect_error(svi_fit(Y ~ x, s$d, family = pln(rank = 1), control = svi_control(batch_size = 20)),
               "full batches", class = "svir_error")
  expect_error(svi_fit(Y ~ x, s$d, family = pln(rank = 1), backend = "cuda"), "CPU only",
               class = "svir_error")
  expect_identical(pln(rank = 2)$residual, FALSE)
  expect_identical(pln(rank = 2, residual = TRUE)$residual, TRUE)
  expect_output(print(pln(rank = 2, residual = TRUE)), "rank 2 \\+ diagonal")
})

test_that("a PLN-PCA fit holds no n x p array: its memory estimate grows with n q", {
  big <- svir:::svir_pln_memory(1e6, 1e4, q = 10L, d = 2)
  expect_lt(big, 5e9) # an n x p layer would be 80 GB per array
  expect_gt(svir:::svir_pln_memory(1e6, 1e4), 1e12)
  # the objects a fit keeps, beyond the counts, offsets and covariates
  s <- pca_sim(2000, 100, 2, seed = 15)
  fit <- svi_fit(Y ~ x + offset(log(depth)), s$d, family = pln(rank = 2))
  keep <- fit[setdiff(names(fit), c("Y", "offset", "X", "call", "terms", "formula"))]
  expect_lt(as.numeric(utils::object.size(keep)), 8 * 2000 * 100 / 4)
})
