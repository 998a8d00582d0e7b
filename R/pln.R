# The Poisson-lognormal model for multivariate counts (issue 5; dev/PLN.md).

#' The Poisson-lognormal family for multivariate counts
#'
#' `pln()` makes [svi_fit()] fit the Poisson-lognormal (PLN) model to a
#' matrix of counts, as PLNmodels does: for row `i` of an `n x p` count
#' matrix `Y` with covariates `X_i` (from the formula) and offsets `O_i`,
#' `Z_i ~ N(X_i B, Sigma)` and `Y_ij ~ Poisson(exp(O_ij + Z_ij))`.
#'
#' @section Fitting:
#' Each row gets a Gaussian `q(Z_i) = N(M_i, diag(S_i^2))`, whose expected
#' Poisson rate `exp(O_ij + M_ij + S_ij^2 / 2)` is known in closed form, so
#' the objective (the ELBO) has no Monte Carlo noise. `B` and `Sigma` are
#' point estimates (variational EM): for given `M` and `S` their optimum is
#' in closed form (`B` by least squares of `M` on `X`, `Sigma` from the
#' residuals and `S`), and the ELBO at that optimum is maximised over `M`
#' and `S` by L-BFGS in C, scaled by each entry's curvature, with the
#' gradient computed with BLAS. This is the objective PLNmodels maximises,
#' and the fit stops by PLNmodels' rule: when an iteration changes the ELBO
#' by less than `1e-6` of its value (`1e-8` when `n < 1.5 p`). The fit's
#' `trace` holds the ELBO after each iteration.
#'
#' `covariance = "full"` estimates all of `Sigma` (it needs more rows than
#' columns), `"diagonal"` one variance per column, `"spherical"` one
#' variance for all. With small counts the estimated covariances are
#' attenuated, because `q(Z_i)` has no correlations (the variances are not);
#' PLNmodels' estimates, from the same objective, share this.
#'
#' All-zero columns of `Y` are refused; all-zero rows are kept.
#'
#' This version fits dense count matrices on the CPU, in full batches.
#' `rank` (PLN-PCA), sparse matrices, minibatches, `method = "qem"` and
#' `backend = "cuda"` are not available yet and are refused with an error.
#'
#' @param rank `NULL` (a full-rank `Sigma`); a number of latent dimensions
#'   for PLN-PCA is not available in this version.
#' @param covariance `"full"`, `"diagonal"` or `"spherical"`.
#' @return An object of class `"svir_pln_family"` for the `family` argument
#'   of [svi_fit()]. The fit is an object of class `"svi_pln"`; see
#'   [coef.svi_pln()].
#' @examples
#' set.seed(1)
#' n <- 200
#' x <- rnorm(n)
#' Z <- cbind(0.5 + 0.3 * x, 1 - 0.2 * x, 0.2) +
#'   matrix(rnorm(n * 3), n) %*% chol(matrix(c(1, 0.5, 0, 0.5, 1, 0.3, 0, 0.3, 1), 3))
#' d <- data.frame(x = x)
#' d$Y <- matrix(rpois(n * 3, exp(Z)), n, dimnames = list(NULL, c("a", "b", "c")))
#' fit <- svi_fit(Y ~ x, data = d, family = pln())
#' fit
#' coef(fit)
#' cov2cor(sigma(fit))
#' @export
pln <- function(rank = NULL, covariance = c("full", "diagonal", "spherical")) {
  covariance <- svir_match_arg(covariance, c("full", "diagonal", "spherical"), "covariance")
  if (!is.null(rank)) {
    cli::cli_abort(c("{.code pln(rank = )} (PLN-PCA) is not available in this version of svir.",
                     i = "Leave {.arg rank} as {.code NULL} for a full-rank covariance."),
                   class = "svir_error", call = NULL)
  }
  structure(list(family = "pln", rank = rank, covariance = covariance),
            class = "svir_pln_family")
}

#' @export
print.svir_pln_family <- function(x, ...) {
  cat(sprintf("Poisson-lognormal family (covariance: %s)\n", x$covariance))
  invisible(x)
}

# svi_fit() for family = pln(): checks, the objective's data, L-BFGS, the
# svi_pln object.
svir_pln_fit <- function(formula, data, family, method, control, backend, na.action, call) {
  abort <- function(msg) cli::cli_abort(msg, class = "svir_error", call = call)
  if (method != "svi") abort(c("{.code method = \"{method}\"} is not available for {.fn pln} in this version.",
                               i = "Use {.code method = \"svi\"}."))
  if (!identical(backend, "auto") && !identical(backend, "cpu")) {
    abort(c("{.fn pln} fits run on the CPU in this version.",
            i = "Use {.code backend = \"cpu\"} or {.code \"auto\"}."))
  }
  if (!is.null(control$batch_size)) {
    abort(c("{.fn pln} fits use every row in each iteration in this version.",
            i = "Leave {.arg batch_size} as {.code NULL}."))
  }
  if (!inherits(formula, "formula") || length(formula) != 3L) {
    abort("{.arg formula} must be a two-sided formula with the count matrix on the left, e.g. {.code Y ~ x}.")
  }
  if (length(lme4::findbars(formula))) {
    abort(c("{.fn pln} takes no random-effect terms such as {.code (1 | g)}.",
            i = "The rows' latent effects are the model's random effects."))
  }
  lhs <- tryCatch(eval(formula[[2L]], data, environment(formula)), error = function(e) NULL)
  if (inherits(lhs, "Matrix")) {
    abort(c("Sparse count matrices are not supported yet.",
            i = "Use {.code as.matrix()} on the response for now."))
  }
  mf <- stats::model.frame(formula, data, na.action = na.action)
  Y <- stats::model.response(mf)
  if (is.data.frame(Y)) Y <- as.matrix(Y)
  if (!is.matrix(Y) || !is.numeric(Y)) {
    abort(c("The response of a {.fn pln} model must be a numeric count matrix (rows: samples, columns: species or genes).",
            i = "Put the matrix in {.arg data} as a column, e.g. {.code d$Y <- counts}, or name it in the formula."))
  }
  storage.mode(Y) <- "double"
  n <- nrow(Y)
  p <- ncol(Y)
  if (is.null(colnames(Y))) colnames(Y) <- paste0("Y", seq_len(p))
  if (any(!is.finite(Y)) || any(Y < 0) || any(abs(Y - round(Y)) > 1e-8)) {
    abort("The counts must be non-negative whole numbers (found {sum(!is.finite(Y) | Y < 0 | abs(Y - round(Y)) > 1e-8)} other value{?s}).")
  }
  zero <- colnames(Y)[colSums(Y) == 0]
  if (length(zero)) {
    abort(c("The count matrix has all-zero columns: {.val {zero[seq_len(min(5L, length(zero)))]}} ({length(zero)} in all).",
            i = "Drop them before fitting: the model cannot estimate their mean."))
  }
  tt <- stats::delete.response(stats::terms(mf))
  X <- stats::model.matrix(tt, mf)
  d <- ncol(X)
  if (d > 0 && qr(X)$rank < d) abort("The design matrix of the covariates is rank-deficient: drop redundant terms.")
  O <- stats::model.offset(mf)
  if (!is.null(O)) {
    if (is.null(dim(O)) && length(O) == n) {
      O <- matrix(as.double(O), n, p)
    } else if (!is.matrix(O) || !identical(dim(O), dim(Y))) {
      abort("The offset must have one value per row ({n}) or one per count ({n} x {p}); it has {if (is.null(dim(O))) length(O) else paste(dim(O), collapse = ' x ')}.")
    }
    if (any(!is.finite(O))) abort(c("The offset has non-finite values.",
                                    i = "For {.code offset(log(depth))}, every depth must be positive."))
    storage.mode(O) <- "double"
  }
  cov <- match(family$covariance, c("full", "diagonal", "spherical")) - 1L
  if (cov == 0L && p >= n) {
    abort(c("A full covariance of {p} columns needs more than {p} rows; the data have {n}.",
            i = "Use {.code pln(covariance = \"diagonal\")} or {.code \"spherical\"}."))
  }
  dat <- list(Y = Y, O = O, X = X, P = if (d > 0) solve(crossprod(X), t(X)) else matrix(0, 0, n),
              lgy = sum(lgamma(Y + 1)), cov = cov, n = n, p = p, d = d,
              threads = as.integer(if (is.null(control$threads)) 0L else control$threads))
  # start: M at log(1 + Y) less the offset, S = 0.1
  M0 <- log1p(Y) - (if (is.null(O)) 0 else O)
  par0 <- c(M0, rep(log(0.1), n * p))
  # PLNmodels' tolerance on the relative change of the ELBO: 1e-6 when n >=
  # 1.5 p, else 1e-8
  tol <- if (n >= 1.5 * p) 1e-6 else 1e-8
  t0 <- proc.time()[["elapsed"]]
  r <- .Call(C_svir_pln_fit_r, dat, par0, as.integer(control$max_steps), tol)
  time <- proc.time()[["elapsed"]] - t0
  converged <- r$iterations < control$max_steps
  if (!converged) {
    cli::cli_warn(c("The fit stopped at {.code max_steps = {control$max_steps}} iterations before the ELBO converged.",
                    i = "Increase {.code control = svi_control(max_steps = )}."))
  }
  trace <- r$trace
  np <- n * p
  B <- r$B
  dimnames(B) <- list(colnames(X), colnames(Y))
  Sigma <- r$Sigma
  dimnames(Sigma) <- list(colnames(Y), colnames(Y))
  M <- matrix(r$par[seq_len(np)], n, p, dimnames = list(rownames(Y), colnames(Y)))
  S <- matrix(exp(r$par[np + seq_len(np)]), n, p, dimnames = dimnames(M))
  structure(list(
    coefficients = B, sigma = Sigma, M = M, S = S, offset = O,
    elbo = r$J, trace = trace, steps = r$iterations,
    stop_reason = if (converged) "converged" else "max_steps",
    tol = tol, time = time, covariance = family$covariance,
    n = n, p = p, formula = formula, call = call, terms = tt,
    xlevels = stats::.getXlevels(tt, mf), X = X, Y = Y),
    class = "svi_pln")
}

#' Results of a Poisson-lognormal fit
#'
#' Methods for fits of [svi_fit()] with `family = pln()`. `coef()` gives the
#' regression coefficients `B` (covariates x count columns), `sigma()` the
#' covariance matrix `Sigma` of the latent layer (`cov2cor(sigma(fit))` gives
#' the correlations), `fitted()` the expected counts
#' `exp(O + M + S^2 / 2)` under the fitted variational distributions.
#'
#' @param object,x A fit with `family = pln()` (class `"svi_pln"`).
#' @param ... Not used.
#' @return `coef()`: a matrix; `sigma()`: a `p x p` matrix; `fitted()`: an
#'   `n x p` matrix; `print()`: `x`, invisibly.
#' @examples
#' set.seed(2)
#' d <- data.frame(x = rnorm(100))
#' d$Y <- matrix(rpois(300, exp(1 + 0.5 * d$x)), 100)
#' fit <- svi_fit(Y ~ x, data = d, family = pln(covariance = "diagonal"))
#' coef(fit)
#' diag(sigma(fit))
#' head(fitted(fit))
#' @name coef.svi_pln
#' @export
coef.svi_pln <- function(object, ...) object$coefficients

#' @rdname coef.svi_pln
#' @export
sigma.svi_pln <- function(object, ...) object$sigma

#' @rdname coef.svi_pln
#' @export
fitted.svi_pln <- function(object, ...) {
  eta <- object$M + object$S^2 / 2
  if (!is.null(object$offset)) eta <- eta + object$offset
  exp(eta)
}

#' @rdname coef.svi_pln
#' @export
print.svi_pln <- function(x, ...) {
  cat(sprintf("Poisson-lognormal model fitted by variational EM (svir), covariance: %s\n",
              x$covariance))
  cat(sprintf("  %d rows x %d count columns; ELBO %.2f after %d iterations (%s), %.2f s\n",
              x$n, x$p, x$elbo, x$steps, x$stop_reason, x$time))
  cat("Coefficients (first columns):\n")
  print(signif(x$coefficients[, seq_len(min(6L, x$p)), drop = FALSE], 4))
  invisible(x)
}

#' Correlations between the count columns of a Poisson-lognormal fit
#'
#' The correlations of the latent layer `Z` of a fit with `family = pln()`:
#' `cov2cor(sigma(fit))`, or with `partial = TRUE` the partial correlations
#' (each pair given all other columns), `-Omega_jk / sqrt(Omega_jj
#' Omega_kk)` with `Omega = Sigma^-1`: the edges of the Gaussian graphical
#' model of the latent layer, zero where two columns are conditionally
#' independent.
#'
#' @param object A fit with `family = pln()` (class `"svi_pln"`).
#' @param partial `FALSE` (default) for correlations, `TRUE` for partial
#'   correlations.
#' @return A `p x p` correlation matrix with the columns' names.
#' @examples
#' set.seed(3)
#' d <- data.frame(x = rnorm(150))
#' S <- matrix(c(1, 0.6, 0.3, 0.6, 1, 0.5, 0.3, 0.5, 1), 3)
#' Z <- 1 + matrix(rnorm(450), 150) %*% chol(S)
#' d$Y <- matrix(rpois(450, exp(Z)), 150, dimnames = list(NULL, c("a", "b", "c")))
#' fit <- svi_fit(Y ~ x, data = d, family = pln())
#' pln_cor(fit)
#' pln_cor(fit, partial = TRUE)
#' @export
pln_cor <- function(object, partial = FALSE) {
  if (!inherits(object, "svi_pln")) {
    cli::cli_abort("{.arg object} must be a fit with {.code family = pln()}.",
                   class = "svir_error", call = NULL)
  }
  partial <- svir_check_flag(partial, "partial")
  S <- object$sigma
  if (!partial) return(stats::cov2cor(S))
  P <- -stats::cov2cor(solve(S))
  diag(P) <- 1
  dimnames(P) <- dimnames(S)
  P
}
