# Results methods of Poisson-lognormal fits (R/pln-methods.R): logLik, AIC,
# BIC, pln_criteria(), pln_loglik(), scores(), predict(), plot().

plnm_sim <- function(n, p, Sigma, seed, B = NULL) {
  set.seed(seed)
  x <- rnorm(n)
  f <- factor(sample(c("a", "b", "c"), n, replace = TRUE))
  X <- cbind(1, x, f == "b", f == "c")
  if (is.null(B)) B <- rbind(runif(p, 0.5, 1.5), runif(p, -0.5, 0.5), runif(p, -0.3, 0.3), 0)
  Z <- X %*% B + matrix(rnorm(n * p), n) %*% chol(Sigma)
  depth <- exp(rnorm(n, 0, 0.3))
  d <- data.frame(x = x, f = f, depth = depth)
  d$Y <- matrix(rpois(n * p, depth * exp(Z)), n, dimnames = list(NULL, paste0("sp", seq_len(p))))
  d
}

# the ELBO from its definition (dev/PLN.md), at the fit's B, Sigma, M, S
plnm_elbo <- function(fit) {
  Y <- fit$Y
  O <- if (is.null(fit$offset)) 0 else fit$offset
  M <- fit$M
  S <- fit$S
  n <- nrow(Y)
  p <- ncol(Y)
  Om <- solve(fit$sigma)
  R <- M - fit$X %*% fit$coefficients
  sum(Y * (O + M) - exp(O + M + S^2 / 2) - lgamma(Y + 1)) -
    n / 2 * as.numeric(determinant(fit$sigma)$modulus) -
    0.5 * (sum((R %*% Om) * R) + sum(S^2 %*% diag(diag(Om), p))) + sum(log(S)) + n * p / 2
}

test_that("logLik() is the ELBO with the parameter count as df; AIC, BIC, nobs agree", {
  d <- plnm_sim(60, 3, 0.3 * 0.5^abs(outer(1:3, 1:3, "-")), seed = 21)
  fits <- list(full = svi_fit(Y ~ x + f + offset(log(depth)), d, family = pln()),
               diagonal = svi_fit(Y ~ x + f + offset(log(depth)), d, family = pln(covariance = "diagonal")),
               spherical = svi_fit(Y ~ x + f + offset(log(depth)), d, family = pln(covariance = "spherical")))
  # d = 4 coefficients per column (intercept, x, fb, fc), p = 3
  df <- c(full = 12 + 6, diagonal = 12 + 3, spherical = 12 + 1)
  for (k in names(fits)) {
    fit <- fits[[k]]
    ll <- logLik(fit)
    expect_s3_class(ll, "logLik")
    expect_equal(as.numeric(ll), fit$elbo)
    expect_equal(as.numeric(ll), plnm_elbo(fit), tolerance = 1e-8, info = k)
    expect_equal(attr(ll, "df"), df[[k]], info = k)
    expect_equal(attr(ll, "nobs"), 60)
    expect_equal(nobs(fit), 60)
    expect_equal(BIC(fit), -2 * fit$elbo + df[[k]] * log(60))
    expect_equal(AIC(fit), -2 * fit$elbo + 2 * df[[k]])
  }
  expect_equal(AIC(fits$full, fits$diagonal)$df, unname(df[1:2]))

  # PLNmodels' convention: BIC = loglik - df/2 log n (= -BIC()/2), ICL = BIC - entropy
  cr <- pln_criteria(fits$full, fits$diagonal, sph = fits$spherical)
  expect_equal(cr$model, c("fits$full", "fits$diagonal", "sph"))
  expect_equal(cr$df, unname(df))
  expect_equal(cr$covariance, names(fits))
  expect_true(all(is.na(cr$rank)))
  expect_equal(cr$loglik, unname(vapply(fits, function(f) f$elbo, 0)))
  expect_equal(cr$BIC, -unname(vapply(fits, BIC, 0)) / 2)
  ent <- vapply(fits, function(f) sum(0.5 * log(2 * pi * exp(1) * f$S^2)), 0)
  expect_equal(cr$ICL, cr$BIC - unname(ent))
  expect_equal(pln_criteria(fits), transform(cr, model = names(fits)))
  expect_error(pln_criteria(fits$full, lm(1 ~ 1)), "pln", class = "svir_error")
})

test_that("pln_loglik() is above the ELBO and matches the marginal likelihood by quadrature", {
  Sig <- matrix(c(0.5, 0.3, 0.3, 0.4), 2)
  d <- plnm_sim(30, 2, Sig, seed = 22)
  fit <- svi_fit(Y ~ x + offset(log(depth)), d, family = pln())
  # log p(Y_i) by a 2-d grid around M_i (+- 8 S_i): the integrand is smooth
  # and negligible at the edges, so a Riemann sum is exact to many digits
  mu <- fit$X %*% coef(fit) + log(d$depth)
  Si <- solve(sigma(fit))
  ldet <- as.numeric(determinant(sigma(fit))$modulus)
  exact <- vapply(seq_len(30), function(i) {
    g <- lapply(1:2, function(j) fit$M[i, j] + log(d$depth[i]) + seq(-8, 8, length.out = 241) * fit$S[i, j])
    G <- as.matrix(expand.grid(g[[1]], g[[2]]))
    D <- sweep(G, 2, mu[i, ])
    lf <- dpois(fit$Y[i, 1], exp(G[, 1]), log = TRUE) + dpois(fit$Y[i, 2], exp(G[, 2]), log = TRUE) -
      0.5 * rowSums((D %*% Si) * D) - log(2 * pi) - ldet / 2
    m <- max(lf)
    m + log(sum(exp(lf - m)) * diff(g[[1]][1:2]) * diff(g[[2]][1:2]))
  }, 0)
  expect_gt(sum(exact), fit$elbo)
  r <- pln_loglik(fit, nsamples = 2000)
  expect_s3_class(r, "svir_pln_loglik")
  expect_length(r$rows, 30)
  expect_equal(sum(r$rows), r$loglik)
  expect_gt(r$loglik, fit$elbo + 3 * r$se)
  expect_lt(abs(r$loglik - sum(exact)), 4 * r$se + 0.01)
  expect_lt(max(abs(r$rows - exact)), 0.1)
  expect_true(all(r$ess > 100 & r$ess <= 2000))
  expect_output(print(r), "importance sampling")

  # reproducible by seed, and R's generator left as it was
  set.seed(5)
  u1 <- runif(1)
  set.seed(5)
  r2 <- pln_loglik(fit, nsamples = 2000)
  expect_identical(runif(1), u1)
  expect_identical(r2$loglik, r$loglik)
  expect_false(identical(pln_loglik(fit, nsamples = 2000, seed = 2)$loglik, r$loglik))

  # a diagonal fit, more columns, rows in several blocks
  d5 <- plnm_sim(80, 5, diag(seq(0.2, 0.5, length.out = 5)), seed = 23)
  fd <- svi_fit(Y ~ x, d5, family = pln(covariance = "diagonal"))
  rd <- pln_loglik(fd, nsamples = 500)
  expect_gt(rd$loglik, fd$elbo - 3 * rd$se)
  expect_error(pln_loglik(fd, nsamples = 1), "nsamples", class = "svir_error")
  expect_error(pln_loglik(lm(1 ~ 1)), "pln", class = "svir_error")
})

test_that("scores() projects M - X B on the eigenvectors of Sigma, largest first", {
  set.seed(24)
  w <- c(1, 0.8, 0.6, -0.5, 0, 0.2)
  Sig <- tcrossprod(w) + diag(0.1, 6)
  d <- plnm_sim(150, 6, Sig, seed = 24)
  fit <- svi_fit(Y ~ x + f + offset(log(depth)), d, family = pln())
  sc <- scores(fit)
  expect_equal(dim(sc), c(150L, 2L))
  expect_equal(colnames(sc), c("PC1", "PC2"))
  R <- fit$M - model.matrix(~ x + f, d) %*% coef(fit)
  e <- eigen(sigma(fit), symmetric = TRUE)
  ref <- R %*% e$vectors[, 1:2]
  sgn <- sign(colSums(sc * ref))
  expect_equal(unname(sc), unname(ref) * rep(sgn, each = 150), tolerance = 1e-10,
               ignore_attr = TRUE)
  expect_gt(var(sc[, 1]), 5 * var(sc[, 2]))
  v <- attr(sc, "variance")
  expect_equal(v$eigenvalue, e$values)
  expect_true(all(diff(v$eigenvalue) <= 0))
  expect_equal(sum(v$share), 1)
  expect_equal(v$cumulative[6], 1)
  # all axes: the loadings rebuild Sigma, and the axes are orthonormal
  sa <- scores(fit, axes = 6)
  L <- attr(sa, "loadings")
  expect_equal(rownames(L), colnames(fit$Y))
  expect_equal(unname(tcrossprod(L)), unname(sigma(fit)), tolerance = 1e-10)
  V <- L / rep(sqrt(e$values), each = 6)
  expect_equal(crossprod(V), diag(6), tolerance = 1e-10, ignore_attr = TRUE)
  # the first axis follows the loading vector w (up to sign)
  expect_gt(abs(cor(V[, 1], w)), 0.95)
  expect_error(scores(fit, axes = 7), "axes", class = "svir_error")
})

test_that("scores() of a rank-q fit are the posterior factor means on W's principal axes", {
  # a constructed rank-2 fit (pln(rank = ) is not in this branch): the
  # posterior mean of u_i given R_i = W u_i + e_i is W' Sigma^-1 R_i
  d <- plnm_sim(80, 5, diag(0.3, 5), seed = 25)
  fit <- svi_fit(Y ~ x, d, family = pln(covariance = "diagonal"))
  set.seed(25)
  W <- matrix(rnorm(10, 0, 0.5), 5, 2)
  psi <- seq(0.1, 0.3, length.out = 5)
  fit$rank <- 2L
  fit$loadings <- W
  fit$psi <- psi
  fit$sigma <- tcrossprod(W) + diag(psi)
  R <- fit$M - fit$X %*% coef(fit)
  u <- R %*% solve(fit$sigma, W)
  U <- svd(W)$u
  sc <- scores(fit)
  ref <- u %*% t(W) %*% U
  sgn <- sign(colSums(sc * ref))
  expect_equal(unname(sc), unname(ref) * rep(sgn, each = 80), tolerance = 1e-10,
               ignore_attr = TRUE)
  expect_equal(attr(sc, "variance")$eigenvalue, svd(W)$d^2)
  expect_equal(unname(tcrossprod(attr(sc, "loadings"))), tcrossprod(W), tolerance = 1e-10)
  expect_equal(sum(attr(sc, "variance")$share) + sum(psi) / sum(diag(fit$sigma)), 1)
  expect_error(scores(fit, axes = 3), "rank", class = "svir_error")
  expect_equal(attr(logLik(fit), "df"), 2 * 5 + (5 * 2 - 1 + 5))
  expect_equal(pln_criteria(fit)$rank, 2L)
})

test_that("predict() gives O + X B (link) and the lognormal mean (response) for new rows", {
  d <- plnm_sim(100, 3, 0.3 * 0.5^abs(outer(1:3, 1:3, "-")), seed = 26)
  fit <- svi_fit(Y ~ x + f + offset(log(depth)), d, family = pln())
  B <- coef(fit)
  nd <- data.frame(x = c(-1, 0, 2), f = c("c", "a", "c"), depth = c(1, 2, 0.5))
  Xn <- cbind(1, nd$x, 0, nd$f == "c")
  link <- log(nd$depth) + Xn %*% B
  expect_equal(predict(fit, nd, type = "link"), link, ignore_attr = TRUE)
  expect_equal(colnames(predict(fit, nd)), colnames(d$Y))
  expect_equal(predict(fit, nd), exp(link + rep(diag(sigma(fit)) / 2, each = 3)), ignore_attr = TRUE)
  # the offset given instead of the formula's: one per row or one per count
  nd0 <- nd[c("x", "f")]
  expect_equal(predict(fit, nd0, type = "link", offset = log(nd$depth)), link, ignore_attr = TRUE)
  Om <- matrix(c(0, 1, 2), 3, 3, byrow = TRUE)
  expect_equal(predict(fit, nd0, type = "link", offset = Om), Om + Xn %*% B, ignore_attr = TRUE)
  expect_error(predict(fit, nd0, offset = 1:2), "offset", class = "svir_error")
  # newdata = the data: the hand value; no newdata: conditional on the counts
  Xd <- cbind(1, d$x, d$f == "b", d$f == "c")
  expect_equal(predict(fit, d, type = "link"), log(d$depth) + Xd %*% B, ignore_attr = TRUE)
  expect_equal(predict(fit, type = "link"), fit$M + log(d$depth), ignore_attr = TRUE)
  expect_equal(predict(fit), fitted(fit))
  expect_error(predict(fit, offset = 0), "newdata", class = "svir_error")
  expect_error(predict(fit, nd, type = "terms"), "type", class = "svir_error")
  # no offset in the model
  f2 <- svi_fit(Y ~ x, d, family = pln(covariance = "diagonal"))
  expect_equal(predict(f2, data.frame(x = 1:2), type = "link"), cbind(1, 1:2) %*% coef(f2),
               ignore_attr = TRUE)
})

test_that("plot() draws the ELBO trace and a biplot", {
  d <- plnm_sim(80, 4, 0.3 * 0.5^abs(outer(1:4, 1:4, "-")), seed = 27)
  fit <- svi_fit(Y ~ x, d, family = pln())
  grDevices::pdf(NULL)
  on.exit(grDevices::dev.off())
  expect_invisible(out <- plot(fit))
  expect_identical(out, fit)
  expect_invisible(plot(fit, which = "biplot", main = "my title"))
  expect_error(plot(fit, which = "pairs"), "which", class = "svir_error")
})
