# Results of a Poisson-lognormal fit (issue 5; dev/PLN.md): the ELBO as a
# log-likelihood, BIC and ICL, an importance-sampling estimate of the
# marginal log-likelihood, ordination scores, predictions and plots.
# Fits with pln(rank = q) carry `rank`, `residual` and `loadings`: PLN-PCA
# (residual FALSE; Sigma = C C') also `factors` (the n x q guide) and no M,
# S or sigma; the factor model (residual TRUE; Sigma = W W' + diag(psi))
# also `psi`. Full-rank fits have `rank = NULL`.

# --- helpers ----------------------------------------------------------------

svir_pln_check <- function(object, arg = "object", need = character()) {
  if (!inherits(object, "svi_pln")) {
    cli::cli_abort("{.arg {arg}} must be a fit with {.code family = pln()} (class {.cls svi_pln}).",
                   class = "svir_error", call = NULL)
  }
  miss <- need[vapply(need, function(f) is.null(object[[f]]), logical(1))]
  if (length(miss)) {
    cli::cli_abort(c("The fit in {.arg {arg}} lacks {.field {miss}}: it was made by an older version of svir.",
                     i = "Fit the model again with this version."),
                   class = "svir_error", call = NULL)
  }
  invisible(object)
}

# the number of parameters: B (d x p) and the covariance's
svir_pln_df <- function(object) {
  p <- object$p
  d <- NROW(object$coefficients)
  q <- object$rank
  ncov <- if (!is.null(q)) {
    p * q - q * (q - 1) / 2 + if (svir_pln_is_pca(object)) 0 else p
  } else {
    switch(object$covariance, full = p * (p + 1) / 2, diagonal = p, spherical = 1)
  }
  d * p + ncov
}

# Sigma, from the loadings for a rank-q fit that does not store it
svir_pln_Sigma <- function(object) {
  if (!is.null(object$sigma)) return(object$sigma)
  S <- tcrossprod(object$loadings)
  if (!is.null(object$psi)) S <- S + diag(object$psi, nrow = length(object$psi))
  cn <- colnames(object$coefficients)
  dimnames(S) <- list(cn, cn)
  S
}

# diag(Sigma), without forming Sigma where it is not stored
svir_pln_Sigma_diag <- function(object) {
  if (!is.null(object$sigma)) return(diag(object$sigma))
  v <- rowSums(object$loadings^2) + (if (is.null(object$psi)) 0 else object$psi)
  stats::setNames(v, colnames(object$coefficients))
}

# The latent layer's variational means and sds, M and S (n x p): stored by
# full-batch fits; for PLN-PCA computed from the factors, M = X B + F C',
# S^2 = (sd(F)^2) (C o C)'; for minibatch fits (which keep no n x p locals)
# the VE step on the fit's rows with B and Sigma held, when asked
svir_pln_latent <- function(object) {
  if (!is.null(object$M)) return(list(M = object$M, S = object$S))
  if (svir_pln_is_pca(object)) {
    lat <- svir_pln_pca_MS(object$X, object$coefficients, object$factors$mean,
                           object$factors$sd, object$loadings)
  } else {
    svir_pln_check(object, need = c("X", "Y"))
    lat <- svir_pln_ve(object, Y = object$Y, X = object$X, O = svir_pln_O(object))
  }
  dimnames(lat$M) <- dimnames(lat$S) <- list(rownames(object$Y), colnames(object$coefficients))
  lat[c("M", "S")]
}

# PLN-PCA's Z_i = X_i B + C w_i under q(w_i) = N(Fm_i, diag(Fs_i^2)): its
# means and sds (n x p)
svir_pln_pca_MS <- function(X, B, Fm, Fs, C) {
  list(M = X %*% B + tcrossprod(Fm, C), S = sqrt(tcrossprod(Fs^2, C^2)))
}

# the offset as an n x p matrix (zeros when the model has none; one per row
# recycled over the columns)
svir_pln_O <- function(object) {
  o <- object$offset
  if (is.null(o)) matrix(0, object$n, object$p) else if (is.null(dim(o))) matrix(o, object$n, object$p) else o
}

# flip each column so that its largest entry in absolute value is positive
svir_sign_fix <- function(V) {
  if (!length(V)) return(V)
  k <- max.col(abs(t(V)), ties.method = "first")
  s <- sign(V[cbind(k, seq_len(ncol(V)))])
  s[s == 0] <- 1
  V * rep(s, each = nrow(V))
}

# a terms object without its offset() terms (predict() with `offset = `)
svir_drop_offset <- function(tt) {
  off <- attr(tt, "offset")
  if (is.null(off)) return(tt)
  attr(tt, "variables") <- attr(tt, "variables")[-(off + 1L)]
  if (!is.null(attr(tt, "predvars"))) attr(tt, "predvars") <- attr(tt, "predvars")[-(off + 1L)]
  fac <- attr(tt, "factors")
  if (length(fac)) attr(tt, "factors") <- fac[-off, , drop = FALSE]
  if (!is.null(attr(tt, "dataClasses"))) attr(tt, "dataClasses") <- attr(tt, "dataClasses")[-off]
  attr(tt, "offset") <- NULL
  tt
}

# --- logLik, nobs ------------------------------------------------------------

#' Log-likelihood (ELBO), AIC and BIC of a Poisson-lognormal fit
#'
#' `logLik()` returns the fit's ELBO, a lower bound on the log-likelihood
#' `log p(Y)`, as PLNmodels reports it, with the number of parameters as its
#' `"df"` attribute and the number of rows as `"nobs"`, so that
#' [stats::AIC()] and [stats::BIC()] work (with R's convention: `-2 loglik +
#' k df`, smaller is better; [pln_criteria()] gives PLNmodels' convention).
#' For an estimate of `log p(Y)` itself, see [pln_loglik()].
#'
#' The parameters counted are the `d x p` coefficients `B` and the
#' covariance's: `p (p + 1) / 2` (full), `p` (diagonal), `1` (spherical), or
#' `p q - q (q - 1) / 2 + p` for a rank-`q` fit (`Sigma = W W' + diag(psi)`:
#' `W` up to rotation, and `psi`). The variational parameters `M` and `S` are
#' not counted.
#'
#' @param object A fit with `family = pln()` (class `"svi_pln"`).
#' @param ... Not used.
#' @return `logLik()`: an object of class `"logLik"`; `nobs()`: the number
#'   of rows `n`.
#' @examples
#' set.seed(4)
#' d <- data.frame(x = rnorm(100))
#' d$Y <- matrix(rpois(400, exp(1 + 0.5 * d$x)), 100)
#' fit <- svi_fit(Y ~ x, data = d, family = pln(covariance = "diagonal"))
#' logLik(fit)
#' BIC(fit)
#' @importFrom stats logLik nobs
#' @export
logLik.svi_pln <- function(object, ...) {
  structure(object$elbo, df = svir_pln_df(object), nobs = object$n, class = "logLik")
}

#' @rdname logLik.svi_pln
#' @export
nobs.svi_pln <- function(object, ...) object$n

# --- criteria ----------------------------------------------------------------

#' Model-selection criteria of Poisson-lognormal fits (BIC, ICL)
#'
#' For one or several fits with `family = pln()`, the number of parameters,
#' the ELBO and PLNmodels' criteria, e.g. to choose the rank among fits with
#' different `pln(rank = )`, or the covariance model.
#'
#' The criteria follow PLNmodels' convention, **larger is better**:
#' * `BIC = loglik - df / 2 * log(n)`, with `loglik` the ELBO. This is
#'   `-1/2` times [stats::BIC()] (`-2 loglik + df log(n)`, smaller is
#'   better): same ranking, other scale and sign.
#' * `ICL = BIC - entropy`, with `entropy = sum_ij 1/2 log(2 pi e S_ij^2)`
#'   the entropy of the variational distributions `q(Z_i) = N(M_i,
#'   diag(S_i^2))` (PLNmodels' `PLNfit$ICL` and `$entropy`). It penalises
#'   fits whose latent positions are uncertain.
#'
#' @param object A fit with `family = pln()`, or a list of such fits.
#' @param ... More fits.
#' @return A data frame with one row per fit: `model` (the list's names or
#'   the arguments as written), `rank` (`NA` for a full-rank covariance),
#'   `covariance`, `n`, `df`, `loglik`, `BIC`, `ICL`.
#' @seealso [logLik.svi_pln()], [pln_loglik()].
#' @examples
#' set.seed(5)
#' d <- data.frame(x = rnorm(100))
#' d$Y <- matrix(rpois(400, exp(1 + 0.5 * d$x + rnorm(400, 0, 0.5))), 100)
#' full <- svi_fit(Y ~ x, data = d, family = pln())
#' diagonal <- svi_fit(Y ~ x, data = d, family = pln(covariance = "diagonal"))
#' pln_criteria(full, diagonal)
#' @export
pln_criteria <- function(object, ...) {
  if (!inherits(object, "svi_pln") && is.list(object) && !...length()) {
    fits <- object
    nm <- names(fits)
    if (is.null(nm)) nm <- rep("", length(fits))
    nm[nm == ""] <- paste0("fit", seq_along(fits))[nm == ""]
  } else {
    fits <- c(list(object), list(...))
    nm <- vapply(as.list(substitute(list(object, ...)))[-1L],
                 function(e) paste(deparse(e, width.cutoff = 60L), collapse = " "), "")
    if (!is.null(names(fits))) nm[names(fits) != ""] <- names(fits)[names(fits) != ""]
  }
  if (!length(fits)) {
    cli::cli_abort("{.arg object} must be a fit with {.code family = pln()} or a list of them.",
                   class = "svir_error", call = NULL)
  }
  for (k in seq_along(fits)) svir_pln_check(fits[[k]], arg = if (k == 1L) "object" else "...")
  # criteria compare models of the same counts only
  for (k in seq_along(fits)[-1L]) {
    if (!svir_same_counts(fits[[1L]]$Y, fits[[k]]$Y)) {
      cli::cli_abort(c("{.fn pln_criteria} compares fits of the same count matrix; {.val {nm[1]}} and {.val {nm[k]}} were fitted to different counts.",
                       i = "Their log-likelihoods, BIC and ICL are on different data and cannot be compared.",
                       i = "Fit the models to the same rows and columns (the same {.arg na.action} too)."),
                     class = "svir_error", call = NULL)
    }
  }
  rows <- lapply(fits, function(f) {
    df <- svir_pln_df(f)
    bic <- f$elbo - df / 2 * log(f$n)
    # the entropy of q over the latent layer: n x p for most fits, the n x q
    # factors for PLN-PCA
    s <- if (svir_pln_is_pca(f)) f$factors$sd else svir_pln_latent(f)$S
    entropy <- sum(log(s)) + 0.5 * length(s) * log(2 * pi * exp(1))
    data.frame(rank = if (is.null(f$rank)) NA_integer_ else as.integer(f$rank),
               covariance = f$covariance, n = f$n, df = df, loglik = f$elbo,
               BIC = bic, ICL = bic - entropy, stringsAsFactors = FALSE)
  })
  out <- cbind(model = nm, do.call(rbind, rows), stringsAsFactors = FALSE)
  rownames(out) <- NULL
  out
}

# whether two fits' count matrices (dense or dgCMatrix) are the same
svir_same_counts <- function(a, b) {
  if (is.null(a) || is.null(b)) return(TRUE) # fits from an older version keep no Y
  if (!identical(dim(a), dim(b))) return(FALSE)
  if (isS4(a) != isS4(b)) {
    a <- as.matrix(a)
    b <- as.matrix(b)
  }
  if (isS4(a)) return(identical(a@i, b@i) && identical(a@p, b@p) && identical(a@x, b@x))
  identical(unname(a), unname(b))
}

# --- importance-sampling log-likelihood ------------------------------------

#' Marginal log-likelihood of a Poisson-lognormal fit, by importance sampling
#'
#' Estimates `log p(Y) = sum_i log p(Y_i)` at the fitted `B` and `Sigma`,
#' where `p(Y_i)` integrates the latent `Z_i` out, by importance sampling
#' with the fit's own variational distributions as proposals: for each row,
#' `nsamples` draws `Z_ik ~ q(Z_i) = N(M_i, diag(S_i^2))` and
#' `log p(Y_i) ~ log mean_k p(Y_i | Z_ik) p(Z_ik) / q(Z_ik)`.
#'
#' The per-row estimate is the importance-weighted bound of Burda et al.
#' (2016): on average it lies between the ELBO (`nsamples = 1`) and `log
#' p(Y_i)`, and increases to `log p(Y_i)` with `nsamples`. Its standard
#' error is the delta method's, `sd(w) / (sqrt(nsamples) mean(w))` for the
#' weights `w` of the row, summed in squares over the rows. Small effective
#' sample sizes (`ess`, per row) mean the proposal misses the posterior's
#' mass and the standard error is not to be trusted.
#'
#' Rows are processed in blocks so that memory stays below about 100 MB;
#' the cost is of order `n nsamples p^2` for a full covariance (a triangular
#' solve with the Cholesky factor of `Sigma` per draw).
#'
#' @param object A fit with `family = pln()` (class `"svi_pln"`).
#' @param nsamples Number of draws per row (at least 2).
#' @param seed `NULL`, or a seed for R's generator, set for the draws and
#'   restored afterwards.
#' @return A list of class `"svir_pln_loglik"`: `loglik` (the estimate),
#'   `se` (its standard error), `elbo` (the fit's), `nsamples`, `rows` (the
#'   per-row estimates) and `ess` (the per-row effective sample sizes,
#'   `(sum w)^2 / sum w^2`).
#' @references Burda, Y., Grosse, R. and Salakhutdinov, R. (2016).
#'   Importance weighted autoencoders. *ICLR*.
#' @seealso [logLik.svi_pln()] (the ELBO).
#' @examples
#' set.seed(6)
#' d <- data.frame(x = rnorm(100))
#' d$Y <- matrix(rpois(300, exp(1 + 0.5 * d$x + rnorm(300, 0, 0.5))), 100)
#' fit <- svi_fit(Y ~ x, data = d, family = pln())
#' pln_loglik(fit, nsamples = 200)
#' @export
pln_loglik <- function(object, nsamples = 1000, seed = 1) {
  svir_pln_check(object, need = c("X", "Y"))
  if (!is.numeric(nsamples) || length(nsamples) != 1L || !is.finite(nsamples) ||
      nsamples < 2 || nsamples != round(nsamples)) {
    cli::cli_abort(c("{.arg nsamples} must be a whole number of at least 2.",
                     x = "You supplied {.val {format(nsamples)}}."),
                   class = "svir_error", call = NULL)
  }
  if (!is.null(seed)) {
    if (!is.numeric(seed) || length(seed) != 1L || !is.finite(seed)) {
      cli::cli_abort(c("{.arg seed} must be {.code NULL} or a number.",
                       x = "You supplied {.val {format(seed)}}."),
                     class = "svir_error", call = NULL)
    }
    genv <- globalenv()
    old <- if (exists(".Random.seed", genv, inherits = FALSE)) get(".Random.seed", genv) else NULL
    on.exit(if (is.null(old)) rm(".Random.seed", envir = genv) else assign(".Random.seed", old, genv),
            add = TRUE)
    set.seed(seed)
  }
  K <- as.integer(nsamples)
  n <- object$n
  p <- object$p
  Y <- object$Y
  O <- svir_pln_O(object)
  mu <- object$X %*% object$coefficients
  # the draws of each row's latent variables from its q, as a function of
  # the rows idx and standard normals E: the linear predictor and log p(Z)
  # - log q(Z) (the normalising constants of the two cancel)
  if (svir_pln_is_pca(object)) {
    # PLN-PCA: Z_i = mu_i + C w_i has the density of w_i ~ N(0, I_q), so
    # the draws are of the factors, w ~ q(w_i) = N(m_i, diag(s_i^2))
    C <- object$loadings
    Fm <- object$factors$mean
    Fs <- object$factors$sd
    slog <- rowSums(log(Fs))
    dim_z <- ncol(C)
    draw <- function(idx, E) {
      w <- Fm[idx, , drop = FALSE] + Fs[idx, , drop = FALSE] * E
      list(eta = mu[idx, , drop = FALSE] + tcrossprod(w, C) + O[idx, , drop = FALSE],
           lr = -0.5 * rowSums(w^2) + 0.5 * rowSums(E^2) + slog[idx])
    }
  } else {
    lat <- svir_pln_latent(object)
    M <- lat$M
    S <- lat$S
    U <- tryCatch(chol(svir_pln_Sigma(object)), error = function(e) NULL)
    if (is.null(U)) {
      cli::cli_abort("The fit's covariance matrix is not positive definite, so its likelihood is not defined.",
                     class = "svir_error", call = NULL)
    }
    half_logdet <- sum(log(diag(U)))
    slog <- rowSums(log(S))
    dim_z <- p
    draw <- function(idx, E) {
      Z <- M[idx, , drop = FALSE] + S[idx, , drop = FALSE] * E
      Q <- backsolve(U, t(Z - mu[idx, , drop = FALSE]), transpose = TRUE)
      list(eta = Z + O[idx, , drop = FALSE],
           lr = -0.5 * colSums(Q^2) - half_logdet + 0.5 * rowSums(E^2) + slog[idx])
    }
  }
  nb <- max(1L, floor(2^20 / (K * p)))
  ll <- se2 <- ess <- numeric(n)
  for (start in seq(1L, n, by = nb)) {
    I <- start:min(n, start + nb - 1L)
    m <- length(I)
    idx <- rep(I, times = K) # draw (i, k) in row (k - 1) m + i
    dr <- draw(idx, matrix(stats::rnorm(m * K * dim_z), m * K, dim_z))
    Yb <- Y[I, , drop = FALSE]
    if (isS4(Yb)) Yb <- as.matrix(Yb) # a sparse response, one block at a time
    lgy <- rowSums(lgamma(Yb + 1))
    jdx <- rep(seq_len(m), times = K)
    lpy <- rowSums(Yb[jdx, , drop = FALSE] * dr$eta - exp(dr$eta)) - lgy[jdx]
    # per row: the log of the mean weight, its squared standard error
    # (delta method) and the effective sample size
    lw <- matrix(lpy + dr$lr, m, K)
    mx <- lw[cbind(seq_len(m), max.col(lw, ties.method = "first"))]
    w <- exp(lw - mx)
    mw <- rowMeans(w)
    sw2 <- rowSums(w^2)
    ll[I] <- mx + log(mw)
    se2[I] <- pmax(sw2 / K - mw^2, 0) * K / (K - 1) / (K * mw^2)
    ess[I] <- (K * mw)^2 / sw2
  }
  names(ll) <- names(ess) <- rownames(Y)
  structure(list(loglik = sum(ll), se = sqrt(sum(se2)), elbo = object$elbo, nsamples = K,
                 rows = ll, ess = ess),
            class = "svir_pln_loglik")
}

#' @export
print.svir_pln_loglik <- function(x, ...) {
  cat(sprintf("Log-likelihood by importance sampling (%d draws per row): %.2f (s.e. %.2f)\n",
              x$nsamples, x$loglik, x$se))
  cat(sprintf("  ELBO %.2f; effective sample size per row: min %.0f, median %.0f\n",
              x$elbo, min(x$ess), stats::median(x$ess)))
  invisible(x)
}

# --- scores ------------------------------------------------------------------

#' Ordination scores
#'
#' A generic for the positions of the rows in a few latent dimensions (as
#' vegan's `scores()`); svir has a method for Poisson-lognormal fits,
#' [scores.svi_pln()].
#'
#' @param object A fitted model.
#' @param ... Arguments for the methods.
#' @return See the methods.
#' @export
scores <- function(object, ...) UseMethod("scores")

#' Ordination scores of a Poisson-lognormal fit
#'
#' The rows' positions along the principal axes of the latent covariance,
#' after the covariates' effects are removed: with `R = M - X B` (the
#' latent means less their regression on the covariates, `n x p`),
#' * a full-rank fit: the axes are the eigenvectors `V` of `Sigma`
#'   (largest eigenvalue first) and the scores are `R V`, the projections of
#'   the residual latent means on them;
#' * a rank-`q` fit (`Sigma = W W' + diag(psi)`): the posterior means of the
#'   factors, `u_i = (I + W' Psi^-1 W)^-1 W' Psi^-1 R_i`, mapped into the
#'   latent space (`W u_i`) and projected on the principal axes of `W W'`
#'   (the left singular vectors of `W`); so `axes <= q`.
#'
#' The first axis has the largest latent variance (the first eigenvalue).
#' Each axis' sign is set so that its largest loading is positive. With a
#' diagonal or spherical covariance the axes are the count columns
#' themselves (by decreasing variance; in any order for a spherical one):
#' fit a full or reduced-rank covariance for an ordination.
#'
#' @param object A fit with `family = pln()` (class `"svi_pln"`).
#' @param axes Number of axes (at most `p`, or `q` for a rank-`q` fit).
#' @param ... Not used.
#' @return An `n x axes` matrix with columns `"PC1"`, `"PC2"`, ..., with
#'   attributes `"loadings"` (`p x axes`: the axes scaled by the square
#'   roots of their eigenvalues, so that `tcrossprod(loadings)` is the part
#'   of `Sigma` (or `W W'`) the axes carry; the arrows of a biplot) and
#'   `"variance"` (a data frame over all axes: `eigenvalue`, `share` of
#'   `trace(Sigma)` and its `cumulative` sum).
#' @examples
#' set.seed(7)
#' n <- 150
#' f <- rnorm(n)
#' d <- data.frame(x = rnorm(n))
#' d$Y <- matrix(rpois(n * 5, exp(1 + 0.3 * d$x + outer(f, c(1, 0.8, 0.5, -0.5, 0)))), n,
#'               dimnames = list(NULL, letters[1:5]))
#' fit <- svi_fit(Y ~ x, data = d, family = pln())
#' sc <- scores(fit)
#' head(sc)
#' attr(sc, "variance")
#' @export
#' @rawNamespace S3method(vegan::scores, svi_pln)
scores.svi_pln <- function(object, axes = 2, ...) {
  svir_pln_check(object, need = "X")
  kmax <- if (is.null(object$rank)) object$p else object$rank
  if (!is.numeric(axes) || length(axes) != 1L || !is.finite(axes) || axes < 1 ||
      axes != round(axes) || axes > kmax) {
    cli::cli_abort(c("{.arg axes} must be a whole number from 1 to {kmax} ({if (is.null(object$rank)) 'the number of count columns' else 'the rank of the fit'}).",
                     x = "You supplied {.val {format(axes)}}."),
                   class = "svir_error", call = NULL)
  }
  axes <- as.integer(axes)
  keep <- seq_len(axes)
  cn <- colnames(object$coefficients)
  if (svir_pln_is_pca(object)) {
    # PLN-PCA: the latent residuals are F C' exactly
    W <- object$loadings
    sv <- svd(W)
    lam <- sv$d^2
    V <- svir_sign_fix(sv$u[, keep, drop = FALSE])
    sc <- object$factors$mean %*% crossprod(W, V)
    total <- sum(lam)
  } else if (is.null(object$rank)) {
    R <- svir_pln_latent(object)$M - object$X %*% object$coefficients
    Sig <- object$sigma
    e <- eigen(Sig, symmetric = TRUE)
    lam <- pmax(e$values, 0)
    V <- svir_sign_fix(e$vectors[, keep, drop = FALSE])
    sc <- R %*% V
    total <- sum(diag(Sig))
  } else {
    R <- svir_pln_latent(object)$M - object$X %*% object$coefficients
    W <- object$loadings
    psi <- object$psi
    WtPi <- t(W / psi) # W' Psi^-1, q x p
    u <- solve(diag(ncol(W)) + WtPi %*% W, WtPi %*% t(R)) # q x n
    sv <- svd(W)
    lam <- sv$d^2
    V <- svir_sign_fix(sv$u[, keep, drop = FALSE])
    sc <- crossprod(u, t(W) %*% V) # (W u_i)' V
    total <- sum(lam) + sum(psi)
  }
  pcs <- paste0("PC", seq_along(lam))
  dimnames(sc) <- list(rownames(object$Y), pcs[keep])
  L <- V * rep(sqrt(lam[keep]), each = nrow(V))
  dimnames(L) <- list(cn, pcs[keep])
  attr(sc, "loadings") <- L
  attr(sc, "variance") <- data.frame(eigenvalue = lam, share = lam / total,
                                     cumulative = cumsum(lam) / total, row.names = pcs)
  sc
}

# --- predict -----------------------------------------------------------------

#' Predictions of a Poisson-lognormal fit
#'
#' Without `newdata`: the fitted values, conditional on the observed counts
#' (`type = "response"`: `exp(O + M + S^2 / 2)`, as [fitted()];
#' `type = "link"`: `O + M`, the latent means plus the offsets).
#'
#' With `newdata`: the covariates (and the formula's offsets) are taken from
#' `newdata` as [stats::predict.lm()] does, and the prediction is
#' unconditional, the marginal mean over the latent layer: `type = "link"`
#' gives `O + X B`, `type = "response"` `exp(O + X B + diag(Sigma) / 2)`,
#' the mean count of the Poisson-lognormal distribution.
#'
#' With `newdata` and `responses` (the observed counts of the new rows), the
#' prediction is conditional on those counts: their variational
#' distributions are fitted with `B` and `Sigma` held fixed, and the result
#' is `exp(O + M + S^2 / 2)` (`"response"`) or `O + M` (`"link"`) for the
#' new rows.
#'
#' @param object A fit with `family = pln()` (class `"svi_pln"`).
#' @param newdata `NULL` (the data of the fit) or a data frame with the
#'   covariates of the formula (and the variables of its `offset()` terms,
#'   unless `offset` is given).
#' @param type `"response"` (expected counts) or `"link"` (the log scale).
#' @param offset `NULL` (the formula's `offset()` terms evaluated in
#'   `newdata`), or offsets for the new rows used instead of them: one per
#'   row of `newdata`, or a `nrow(newdata) x p` matrix.
#' @param responses `NULL`, or the count matrix of the new rows
#'   (`nrow(newdata) x p`) for predictions conditional on them.
#' @param ... Not used.
#' @return An `n x p` matrix (rows of `newdata` or of the data, columns of
#'   the count matrix).
#' @examples
#' set.seed(8)
#' d <- data.frame(x = rnorm(100), depth = exp(rnorm(100, 0, 0.3)))
#' d$Y <- matrix(rpois(300, d$depth * exp(1 + 0.5 * d$x)), 100)
#' fit <- svi_fit(Y ~ x + offset(log(depth)), data = d, family = pln(covariance = "diagonal"))
#' predict(fit, newdata = data.frame(x = c(-1, 0, 1), depth = 1))
#' predict(fit, newdata = data.frame(x = c(-1, 0, 1)), offset = 0, type = "link")
#' @export
predict.svi_pln <- function(object, newdata = NULL, type = c("response", "link"),
                            offset = NULL, responses = NULL, ...) {
  svir_pln_check(object)
  type <- svir_match_arg(type, c("response", "link"), "type")
  p <- object$p
  if (is.null(newdata)) {
    if (!is.null(offset) || !is.null(responses)) {
      cli::cli_abort(c("{.arg offset} and {.arg responses} are for new rows.",
                       i = "Give the new rows' covariates in {.arg newdata}."),
                     class = "svir_error", call = NULL)
    }
    return(switch(type, response = stats::fitted(object),
                  link = svir_pln_latent(object)$M + svir_pln_O(object)))
  }
  if (!is.data.frame(newdata)) newdata <- as.data.frame(newdata)
  tt <- if (is.null(offset)) object$terms else svir_drop_offset(object$terms)
  mf <- stats::model.frame(tt, newdata, xlev = object$xlevels, na.action = stats::na.pass)
  X <- stats::model.matrix(tt, mf)
  nn <- nrow(X)
  O <- if (is.null(offset)) stats::model.offset(mf) else offset
  if (is.null(O)) {
    O <- matrix(0, nn, p)
  } else if (is.null(dim(O)) && length(O) %in% c(1L, nn)) {
    O <- matrix(as.double(O), nn, p)
  } else if (!is.matrix(O) || !identical(dim(O), c(nn, p))) {
    cli::cli_abort(c("The offset must have one value per row of {.arg newdata} ({nn}) or one per count ({nn} x {p}).",
                     x = "It has {if (is.null(dim(O))) length(O) else paste(dim(O), collapse = ' x ')}."),
                   class = "svir_error", call = NULL)
  }
  storage.mode(O) <- "double"
  dn <- list(rownames(newdata), colnames(object$coefficients))
  # ---- conditional on the new rows' counts: their variational fit, with B
  # and Sigma held fixed (svir_pln_ve(); O is always an nn x p matrix) ----
  if (!is.null(responses)) {
    responses <- as.matrix(responses)
    if (!identical(dim(responses), c(nn, p))) {
      cli::cli_abort(c("{.arg responses} must be a {nn} x {p} count matrix (rows of {.arg newdata}, columns of the fit).",
                       x = "It is {paste(dim(responses), collapse = ' x ')}."),
                     class = "svir_error", call = NULL)
    }
    storage.mode(responses) <- "double"
    ve <- svir_pln_ve(object, Y = responses, X = X, O = O)
    eta <- O + ve$M
    out <- switch(type, link = eta, response = exp(eta + ve$S^2 / 2))
    dimnames(out) <- dn
    return(out)
  }
  # ---- unconditional: the marginal mean over Z ----
  eta <- O + X %*% object$coefficients
  out <- switch(type, link = eta,
                response = exp(eta + rep(svir_pln_Sigma_diag(object) / 2, each = nn)))
  dimnames(out) <- dn
  out
}

# --- plot --------------------------------------------------------------------

#' Plots of a Poisson-lognormal fit
#'
#' `which = "trace"`: the ELBO after each iteration of the fit, with the
#' reason it stopped in the title. `which = "biplot"`: the rows' scores on
#' the first two axes ([scores.svi_pln()]) as points, and the loadings of
#' the (at most 20) count columns with the longest loadings as arrows,
#' labelled with the columns' names; the arrows are scaled to the scores'
#' range.
#'
#' @param x A fit with `family = pln()` (class `"svi_pln"`).
#' @param which `"trace"` or `"biplot"`.
#' @param ... Further arguments to [graphics::plot()] (e.g. `main`).
#' @return `x`, invisibly.
#' @examples
#' set.seed(9)
#' d <- data.frame(x = rnorm(100))
#' d$Y <- matrix(rpois(400, exp(1 + 0.5 * d$x + rnorm(400, 0, 0.5))), 100,
#'               dimnames = list(NULL, c("a", "b", "c", "d")))
#' fit <- svi_fit(Y ~ x, data = d, family = pln())
#' plot(fit)
#' plot(fit, which = "biplot")
#' @export
plot.svi_pln <- function(x, which = c("trace", "biplot"), ...) {
  svir_pln_check(x, arg = "x")
  which <- svir_match_arg(which, c("trace", "biplot"), "which")
  dots <- list(...)
  if (which == "trace") {
    tr <- as.double(x$trace)
    args <- list(x = seq_along(tr), y = tr, type = if (length(tr) > 50L) "l" else "o",
                 pch = 20, xlab = "iteration", ylab = "ELBO",
                 main = sprintf("ELBO per iteration (%s after %d)", x$stop_reason, x$steps))
  } else {
    if ((if (is.null(x$rank)) x$p else x$rank) < 2L) {
      cli::cli_abort("A biplot needs two axes; the fit has one.", class = "svir_error", call = NULL)
    }
    sc <- scores(x, axes = 2)
    L <- attr(sc, "loadings")
    v <- attr(sc, "variance")
    top <- order(rowSums(L^2), decreasing = TRUE)[seq_len(min(20L, nrow(L)))]
    Lt <- L[top, , drop = FALSE]
    f <- if (max(abs(Lt)) > 0) 0.8 * max(abs(sc)) / max(abs(Lt)) else 1
    lim <- range(c(sc, 1.15 * f * Lt))
    args <- list(x = sc[, 1], y = sc[, 2], pch = 20, col = "grey50", xlim = lim, ylim = lim,
                 xlab = sprintf("PC1 (%.1f%%)", 100 * v$share[1]),
                 ylab = sprintf("PC2 (%.1f%%)", 100 * v$share[2]),
                 main = "Latent positions and loadings")
  }
  args[names(dots)] <- dots
  do.call(graphics::plot, args)
  if (which == "biplot") {
    graphics::abline(h = 0, v = 0, lty = 3, col = "grey70")
    graphics::arrows(0, 0, f * Lt[, 1], f * Lt[, 2], length = 0.08, col = "firebrick")
    graphics::text(1.1 * f * Lt[, 1], 1.1 * f * Lt[, 2], labels = rownames(Lt),
                   col = "firebrick", cex = 0.8)
  }
  invisible(x)
}
