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
#' @section Rank (PLN-PCA):
#' With `rank = q`, `Sigma = W W' + diag(psi)` with `W` a `p x q` matrix of
#' loadings: a factor-analytic covariance with `p q - q (q - 1) / 2 + p`
#' parameters instead of `p (p + 1) / 2`, for ordination ([scores()]) and
#' for many columns (`p` may exceed `n`). `W` and `log(psi)` are optimised
#' jointly with `M` and `S`, and `Sigma^-1` is applied by the Woodbury
#' identity, so an iteration costs `O(n p (d + q))` and no `p x p` matrix is
#' formed but the reported `sigma()`. `W` is identified up to a rotation.
#'
#' @section The coefficients' posterior:
#' `globals = "point"` (default) gives point estimates of `B` and `Sigma`
#' (variational EM, as PLNmodels). `globals = "bayes"` gives `B` a flat
#' prior and a Gaussian posterior: `q(B)` is matrix normal with mean the
#' point estimate and covariance `Sigma` between columns and `(X'X)^-1`
#' between covariates (the optimal `q(B)` under this ELBO), which also
#' divides `Sigma`'s estimate by `n - d` instead of `n` (as REML does).
#' [confint()] gives intervals for `B` from it; the ELBO includes `q(B)`'s
#' entropy.
#'
#' @section Sparse counts:
#' A sparse `Matrix` response (a `dgCMatrix`, e.g. a cells x genes count
#' matrix) is used as it is: the fit visits only its non-zero counts and
#' never forms the dense count matrix (the variational parameters `M` and
#' `S` are dense `n x p` matrices). Name it in the formula (`Y ~ x`, `Y` in
#' the calling environment); the covariates come from `data`, one row per
#' row of `Y`.
#'
#' @section Offsets:
#' `offset(log(depth))` in the formula, with one value per row (recycled
#' over the columns) or an `n x p` matrix; [pln_offsets()] computes the
#' usual ones (total counts, geometric-mean size factors).
#'
#' @section Bad input:
#' Negative, non-integer or missing counts, an offset of the wrong size or
#' with non-finite values, all-zero columns (their mean cannot be
#' estimated) and a full covariance with `p >= n` (use `rank`, `"diagonal"`
#' or `"spherical"`) are errors. All-zero rows are kept: their `M_i` go low,
#' as the offsets allow.
#'
#' @section Minibatches:
#' With `control = svi_control(batch_size = m)` the fit visits the rows in
#' minibatches of `m`, in a new random order each epoch (`seed`): a step
#' takes the batch's contributions out of running sums over all rows
#' (`X'M`, `M'M`, `sum S^2` and the local ELBO terms), refits the batch's
#' `q(Z_i)` with `B` and `Sigma` held (a few L-BFGS iterations from their
#' last values), puts the new contributions back and updates `B` and `Sigma`
#' from the sums (for rank `q`, a few factor-analysis EM iterations). The
#' batch's statistics replace its rows' old ones, so the update sees all `n`
#' rows at the right scale without a learning rate (incremental variational
#' EM, Neal and Hinton 1998): the ELBO, computed exactly from the sums,
#' never decreases, and the fit's fixed points are the full-batch fit's.
#' It stops when an epoch raises the ELBO by less than the full-batch
#' tolerance; `trace` holds the ELBO after each epoch and `max_steps`
#' counts minibatch steps. Memory: `M`, `S` and one batch, against the
#' full-batch optimiser's `20 n p` numbers.
#'
#' @section QEM:
#' `svi_fit(..., family = pln(rank = q), method = "qem")` fits the rank-q
#' model as `Z_ij = X_i B_j + W_j u_i + e_ij` with factors `u_i ~ N(0, I_q)`
#' and entry effects `e_ij ~ N(0, psi_j)`, by importance sampling instead
#' of a variational bound: each iteration draws `K` (`svi_control(K = )`)
#' samples of every row's `u_i` and of every entry's `e_ij` from Gaussian
#' proposals, sums the importance weights over the tree rows > entries into
#' `log P-hat` (a `K`-sample lower bound on the log-likelihood), moves each
#' proposal towards its weighted posterior moments, and updates `B`, `W`
#' (a Newton step of each column's weighted Poisson regression) and `psi`.
#' It targets the likelihood rather than the ELBO, but its M step converges
#' at EM's rate: with small counts it is slow, and it may stop (on a plateau
#' of the noisy `log P-hat`) before the loadings have settled; compare with
#' the variational fit. `trace` holds
#' `log P-hat` per iteration and the fit's `elbo` its mean over the last 10;
#' `ess` the rows' effective sample sizes. An iteration costs `2 n p K^2`
#' exponentials. Where it was checked (n = 300, p = 40, mean counts about
#' 3, `q` = 1 to 8): the rows' effective sample sizes stayed above half of
#' `K = 16` for 90% of the rows up to `q = 8`, so the dimension was not the
#' limit there; the EM-rate convergence was, and QEM's `Sigma` was no more
#' accurate than the variational fit's at 130 to 1,300 times its time. At
#' counts around 30 the two agree. Dense counts, full batches, the CPU
#' only.
#'
#' `backend = "cuda"` runs the full-batch variational fit (every
#' covariance and rank, dense or sparse counts) on a CUDA GPU when
#' [svir_backends()] finds one: the same L-BFGS with its vectors and the
#' `n x p` work on the device, and the `p x p` (full) or `q x q` (rank)
#' factorisations on the CPU. It is written to agree with the CPU up to
#' the order of floating-point sums; its parity tests (whole fits to
#' `1e-6` relative) have not yet run on a GPU. It is meant for large
#' `n p`; `backend = "auto"` fits `pln()` on the CPU.
#' Minibatches and `method = "qem"` run on the CPU only. The fit needs
#' about `300 n p` bytes of device memory (37 doubles per count with the
#' L-BFGS pairs and the data; `dev/CUDA.md`).
#'
#' @param rank `NULL` (a full, diagonal or spherical `Sigma`, see
#'   `covariance`), or the number of latent dimensions `q` (PLN-PCA:
#'   `Sigma = W W' + diag(psi)`); `covariance` is then ignored.
#' @param covariance `"full"`, `"diagonal"` or `"spherical"`.
#' @param globals `"point"` (variational EM point estimates of `B` and
#'   `Sigma`) or `"bayes"` (a Gaussian posterior for `B`).
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
#' # a rank-1 covariance, and a posterior for B
#' fit1 <- svi_fit(Y ~ x, data = d, family = pln(rank = 1, globals = "bayes"))
#' confint(fit1)
#' @export
pln <- function(rank = NULL, covariance = c("full", "diagonal", "spherical"),
                globals = c("point", "bayes")) {
  covariance <- svir_match_arg(covariance, c("full", "diagonal", "spherical"), "covariance")
  globals <- svir_match_arg(globals, c("point", "bayes"), "globals")
  if (!is.null(rank)) {
    if (!is.numeric(rank) || length(rank) != 1L || !is.finite(rank) || rank < 1 ||
        rank != round(rank)) {
      cli::cli_abort(c("{.arg rank} must be a positive whole number (the latent dimensions) or {.code NULL}.",
                       x = "You supplied {.code {deparse1(rank)}}."),
                     class = "svir_error", call = NULL)
    }
    rank <- as.integer(rank)
  }
  structure(list(family = "pln", rank = rank, covariance = covariance, globals = globals),
            class = "svir_pln_family")
}

#' @export
print.svir_pln_family <- function(x, ...) {
  cat(sprintf("Poisson-lognormal family (covariance: %s)\n", svir_pln_covname(x)))
  invisible(x)
}

svir_pln_covname <- function(x) {
  if (is.null(x$rank)) x$covariance else sprintf("rank %d", x$rank)
}

# The response of a pln() formula: a dense double matrix, or a dgCMatrix
# (kept sparse).
svir_pln_response <- function(formula, data, abort) {
  env <- if (missing(data) || !is.data.frame(data)) NULL else data
  lhs <- tryCatch(eval(formula[[2L]], env, environment(formula)),
                  error = function(e) NULL)
  if (isS4(lhs) && methods::is(lhs, "Matrix")) {
    if (!methods::is(lhs, "dgCMatrix")) {
      lhs <- tryCatch(methods::as(methods::as(methods::as(lhs, "CsparseMatrix"), "generalMatrix"),
                                  "dMatrix"),
                      error = function(e) abort("The sparse response could not be converted to a {.cls dgCMatrix}: {conditionMessage(e)}"))
    }
    return(lhs)
  }
  NULL
}

# svi_fit() for family = pln(): checks, the objective's data, L-BFGS, the
# svi_pln object.
svir_pln_fit <- function(formula, data, family, method, control, backend, na.action, call) {
  abort <- function(msg, .envir = parent.frame()) {
    cli::cli_abort(msg, class = "svir_error", call = call, .envir = .envir)
  }
  if (method == "qem" && is.null(family$rank)) {
    abort(c("{.code method = \"qem\"} fits {.fn pln} models with a rank: the latent dimension it samples.",
            i = "Use {.code pln(rank = q)}, or {.code method = \"svi\"} for a full, diagonal or spherical covariance."))
  }
  if (method == "qem" && !is.null(control$batch_size)) {
    abort(c("{.code method = \"qem\"} uses every row in each iteration.",
            i = "Leave {.arg batch_size} as {.code NULL}, or use {.code method = \"svi\"}."))
  }
  # backend = "cuda": full-batch variational fits only; "auto" stays on the
  # CPU (the device pays off for large n p, and no rule is measured yet)
  if (identical(backend, "cuda") && method == "qem") {
    abort(c("{.code method = \"qem\"} for {.fn pln} runs on the CPU only.",
            i = "Use {.code backend = \"cpu\"}, or {.code method = \"svi\"} on the device."))
  }
  if (identical(backend, "cuda") && !is.null(control$batch_size)) {
    abort(c("Minibatches of {.fn pln} fits run on the CPU only.",
            i = "Use {.code backend = \"cpu\"}, or {.code batch_size = NULL} (full batches) on the device."))
  }
  be <- svir_choose_backend(backend)
  if (identical(backend, "auto")) {
    be <- list(backend = "cpu", reason = paste0(
      "backend = \"auto\" fits pln() on the CPU; backend = \"cuda\" runs full-batch ",
      "fits on the GPU, for large n p"))
  }
  if (!inherits(formula, "formula") || length(formula) != 3L) {
    abort("{.arg formula} must be a two-sided formula with the count matrix on the left, e.g. {.code Y ~ x}.")
  }
  if (length(lme4::findbars(formula))) {
    abort(c("{.fn pln} takes no random-effect terms such as {.code (1 | g)}.",
            i = "The rows' latent effects are the model's random effects."))
  }
  Ysp <- svir_pln_response(formula, data, abort)
  if (!is.null(Ysp)) {
    # a sparse response: the model frame holds the covariates only
    rhs <- formula[-2L]
    if (missing(data) || is.null(data)) data <- data.frame(row.names = seq_len(nrow(Ysp)))
    mf <- stats::model.frame(rhs, data, na.action = na.action)
    nas <- as.integer(attr(mf, "na.action"))
    if (nrow(mf) + length(nas) != nrow(Ysp)) {
      abort("The sparse count matrix has {nrow(Ysp)} rows but the covariates have {nrow(mf) + length(nas)}.")
    }
    if (length(nas)) Ysp <- Ysp[-nas, , drop = FALSE]
    n <- nrow(Ysp)
    p <- ncol(Ysp)
    x <- Ysp@x
    if (any(!is.finite(x)) || any(x < 0) || any(abs(x - round(x)) > 1e-8)) {
      abort("The counts must be non-negative whole numbers (found {sum(!is.finite(x) | x < 0 | abs(x - round(x)) > 1e-8)} other value{?s}).")
    }
    colsum <- numeric(p)
    nzc <- diff(Ysp@p)
    colsum[nzc > 0] <- rowsum(x, rep.int(seq_len(p), nzc))[, 1]
    cn <- colnames(Ysp)
  } else {
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
    if (any(!is.finite(Y)) || any(Y < 0) || any(abs(Y - round(Y)) > 1e-8)) {
      abort("The counts must be non-negative whole numbers (found {sum(!is.finite(Y) | Y < 0 | abs(Y - round(Y)) > 1e-8)} other value{?s}).")
    }
    colsum <- colSums(Y)
    cn <- colnames(Y)
  }
  if (is.null(cn)) cn <- paste0("Y", seq_len(p))
  zero <- cn[colsum == 0]
  if (length(zero)) {
    abort(c("The count matrix has all-zero columns: {.val {zero[seq_len(min(5L, length(zero)))]}} ({length(zero)} in all).",
            i = "Drop them before fitting: the model cannot estimate their mean."))
  }
  tt <- stats::delete.response(stats::terms(mf))
  X <- stats::model.matrix(tt, mf)
  d <- ncol(X)
  if (d > 0 && qr(X)$rank < d) abort("The design matrix of the covariates is rank-deficient: drop redundant terms.")
  O <- stats::model.offset(mf)
  Orow <- NULL
  if (!is.null(O)) {
    if (is.null(dim(O)) && length(O) == n) {
      Orow <- as.double(O)
      O <- NULL
    } else if (!is.matrix(O) || !identical(dim(O), c(n, p))) {
      abort("The offset must have one value per row ({n}) or one per count ({n} x {p}); it has {if (is.null(dim(O))) length(O) else paste(dim(O), collapse = ' x ')}.")
    } else {
      storage.mode(O) <- "double"
    }
    if (any(!is.finite(if (is.null(O)) Orow else O))) {
      abort(c("The offset has non-finite values.",
              i = "For {.code offset(log(depth))}, every depth must be positive."))
    }
  }
  rank <- family$rank
  bayes <- identical(family$globals, "bayes")
  nd <- if (bayes) n - d else n
  cov <- if (is.null(rank)) match(family$covariance, c("full", "diagonal", "spherical")) - 1L else 3L
  if (bayes && nd < 1) abort("{.code globals = \"bayes\"} needs more rows ({n}) than covariates ({d}).")
  if (cov == 0L && p >= nd) {
    abort(c("A full covariance of {p} columns needs more than {p} rows{if (bayes) ' (less the covariates)' else ''}; the data have {n}.",
            i = "Use {.code pln(rank = )}, {.code covariance = \"diagonal\"} or {.code \"spherical\"}."))
  }
  if (!is.null(rank) && rank >= p) {
    abort(c("{.code rank = {rank}} must be less than the number of count columns ({p}).",
            i = "For a full covariance leave {.arg rank} as {.code NULL}."))
  }
  P <- if (d > 0) solve(crossprod(X), t(X)) else matrix(0, 0, n)
  if (method == "qem") {
    if (!is.null(Ysp)) {
      abort(c("{.code method = \"qem\"} needs a dense count matrix in this version.",
              i = "Use {.code method = \"svi\"} for sparse counts, or {.code as.matrix()} on them."))
    }
    if (bayes) abort("{.code method = \"qem\"} gives point estimates of B: use {.code globals = \"point\"}.")
    return(svir_pln_qem(Y, O, Orow, X, P, rank, control, tt, mf, formula, call))
  }
  dat <- list(O = O, Orow = Orow, X = X, P = P, cov = cov, q = rank, nd = as.double(nd),
              n = n, p = p, d = d,
              threads = as.integer(if (is.null(control$threads)) 0L else control$threads))
  # start: M at log(1 + Y) less the offset, S = 0.1
  if (is.null(Ysp)) {
    dat$Y <- Y
    dat$lgy <- sum(lgamma(Y + 1))
    M0 <- log1p(Y)
  } else {
    dat$Y <- NULL
    dat$Yp <- Ysp@p
    dat$Yi <- Ysp@i
    dat$Yx <- as.double(Ysp@x)
    dat$lgy <- sum(lgamma(Ysp@x + 1))
    M0 <- matrix(0, n, p)
    M0[cbind(Ysp@i + 1L, rep.int(seq_len(p), diff(Ysp@p)))] <- log1p(Ysp@x)
  }
  if (!is.null(O)) M0 <- M0 - O else if (!is.null(Orow)) M0 <- M0 - Orow
  par0 <- c(M0, rep(log(0.1), n * p))
  if (!is.null(rank)) par0 <- c(par0, svir_pln_pca_start(M0 - X %*% (P %*% M0), rank, nd))
  # PLNmodels' tolerance on the relative change of the ELBO: 1e-6 when n >=
  # 1.5 p, else 1e-8 (control$pln_tol, set by hand, overrides it: dev/)
  tol <- if (!is.null(control$pln_tol)) control$pln_tol else if (n >= 1.5 * p) 1e-6 else 1e-8
  batch <- control$batch_size
  if (!is.null(batch) && batch > n) {
    abort(c("{.arg batch_size} ({batch}) is larger than the number of rows ({n}).",
            i = "Use a value in 1..{n}, or {.code NULL} for full batches."))
  }
  t0 <- proc.time()[["elapsed"]]
  if (is.null(batch)) {
    r <- if (identical(be$backend, "cuda")) {
      .Call(C_svir_pln_fit_cuda_r, dat, par0, as.integer(control$max_steps), tol)
    } else {
      .Call(C_svir_pln_fit_r, dat, par0, as.integer(control$max_steps), tol)
    }
    converged <- r$iterations < control$max_steps
    epochs <- NULL
  } else {
    # minibatches of rows: incremental variational EM (src/svir_pln_mb.c)
    mbx <- list(XtXinv = if (d > 0) solve(crossprod(X)) else matrix(0, 0, 0))
    if (!is.null(Ysp)) {
      Yt <- Matrix::t(Ysp)
      mbx$Rp <- Yt@p
      mbx$Rj <- Yt@i
      mbx$Rx <- as.double(Yt@x)
    }
    inner <- if (is.null(control$pln_inner)) 10 else control$pln_inner
    r <- .Call(C_svir_pln_mb_r, dat, mbx, par0,
               as.double(c(batch, control$max_steps, inner, 5, tol)), control$seed)
    r$iterations <- r$steps
    epochs <- r$epochs
    converged <- r$steps < control$max_steps
  }
  time <- proc.time()[["elapsed"]] - t0
  if (!converged) {
    cli::cli_warn(c("The fit stopped at {.code max_steps = {control$max_steps}} {if (is.null(batch)) 'iterations' else 'minibatch steps'} before the ELBO converged.",
                    i = "Increase {.code control = svi_control(max_steps = )}."))
  }
  # the ELBO's constants from q(B) under globals = "bayes" (src/svir_pln.c)
  const <- if (bayes && d > 0) {
    d * p / 2 * log(2 * pi) - p / 2 * as.numeric(determinant(crossprod(X))$modulus)
  } else 0
  np <- n * p
  rn <- if (is.null(Ysp)) rownames(Y) else rownames(Ysp)
  B <- r$B
  dimnames(B) <- list(colnames(X), cn)
  Sigma <- r$Sigma
  dimnames(Sigma) <- list(cn, cn)
  M <- matrix(r$par[seq_len(np)], n, p, dimnames = list(rn, cn))
  S <- matrix(exp(r$par[np + seq_len(np)]), n, p, dimnames = dimnames(M))
  W <- psi <- NULL
  if (!is.null(rank)) {
    W <- matrix(r$par[2 * np + seq_len(p * rank)], p, rank, dimnames = list(cn, NULL))
    psi <- stats::setNames(exp(r$par[2 * np + p * rank + seq_len(p)]), cn)
  }
  structure(list(
    coefficients = B, sigma = Sigma, M = M, S = S,
    offset = if (is.null(O)) Orow else O,
    loadings = W, psi = psi, rank = rank, globals = family$globals,
    XtXinv = if (bayes && d > 0) solve(crossprod(X)) else NULL,
    X = X, Y = if (is.null(Ysp)) Y else Ysp,
    elbo = r$J + const, trace = r$trace + const, steps = r$iterations,
    batch_size = batch, epochs = epochs,
    stop_reason = if (converged) "converged" else "max_steps",
    tol = tol, time = time, backend = be$backend, backend_reason = be$reason,
    covariance = if (is.null(rank)) family$covariance else "rank",
    n = n, p = p, formula = formula, call = call, terms = tt,
    xlevels = stats::.getXlevels(tt, mf)),
    class = "svi_pln")
}

# PLN-PCA's start: W and log psi of probabilistic PCA of the start's latent
# residuals R (n x p): the top q principal axes of C = (R'R + 0.01 n I) /
# nd, W = U (lambda - s2)^(1/2), psi = s2 (the mean of the other
# eigenvalues), by eigen() for p <= 500 and by a few subspace iterations
# (deterministic, started at the data's first rows) above.
svir_pln_pca_start <- function(R, q, nd) {
  n <- nrow(R)
  p <- ncol(R)
  if (p <= 500L) {
    e <- eigen((crossprod(R) + diag(0.01 * n, p)) / nd, symmetric = TRUE)
    lam <- e$values
    U <- e$vectors[, seq_len(q), drop = FALSE]
    s2 <- mean(lam[-seq_len(q)])
    lam <- lam[seq_len(q)]
  } else {
    k <- min(p, q + 10L)
    Q <- qr.Q(qr(t(R[seq_len(min(n, k)), , drop = FALSE] + 1e-3)))
    for (it in 1:4) Q <- qr.Q(qr(crossprod(R, R %*% Q)))
    Cq <- (crossprod(R %*% Q) + 0.01 * n * diag(ncol(Q))) / nd
    e <- eigen(Cq, symmetric = TRUE)
    U <- Q %*% e$vectors[, seq_len(q), drop = FALSE]
    lam <- e$values[seq_len(q)]
    s2 <- (sum(colSums(R^2)) + 0.01 * n * p) / nd / p
    s2 <- max((s2 * p - sum(lam)) / (p - q), 1e-3 * s2)
  }
  s2 <- max(s2, 1e-3)
  W <- U %*% diag(sqrt(pmax(lam - s2, 1e-3)), q)
  c(W, rep(log(s2), p))
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
  qem <- identical(x$method, "qem")
  cat(sprintf("Poisson-lognormal model fitted by %s (svir), covariance: %s%s\n",
              if (qem) sprintf("QEM (K = %d)", x$K) else "variational EM",
              svir_pln_covname(x),
              if (identical(x$globals, "bayes")) ", Gaussian posterior for B" else ""))
  how <- if (is.null(x$batch_size)) sprintf("%d iterations", x$steps) else
    sprintf("%d minibatch steps (%d epochs of %d-row batches)", x$steps, x$epochs, x$batch_size)
  cat(sprintf("  %d rows x %d count columns; %s %.2f after %s (%s), %.2f s\n",
              x$n, x$p, if (qem) "log P-hat" else "ELBO", x$elbo, how, x$stop_reason, x$time))
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

#' Intervals for the coefficients of a Poisson-lognormal fit
#'
#' For a fit with `family = pln(globals = "bayes")`, the central intervals
#' of the Gaussian posterior of each coefficient `B_kj`: its mean is the
#' estimate and its variance `[(X'X)^-1]_kk Sigma_jj`.
#'
#' @param object A fit with `family = pln(globals = "bayes")`.
#' @param parm Covariates (names or indices of `rownames(coef(object))`);
#'   all by default.
#' @param level The intervals' probability.
#' @param ... Not used.
#' @return A matrix with a row per coefficient, named `"covariate:column"`,
#'   and the lower and upper limits in columns named like `confint.lm()`'s.
#' @examples
#' set.seed(4)
#' d <- data.frame(x = rnorm(100))
#' d$Y <- matrix(rpois(300, exp(1 + 0.5 * d$x)), 100)
#' fit <- svi_fit(Y ~ x, data = d, family = pln(covariance = "diagonal", globals = "bayes"))
#' confint(fit)
#' @export
confint.svi_pln <- function(object, parm, level = 0.95, ...) {
  if (is.null(object$XtXinv)) {
    cli::cli_abort(c("Intervals need the coefficients' posterior, which this fit does not have.",
                     i = "Refit with {.code family = pln(globals = \"bayes\")}."),
                   class = "svir_error", call = NULL)
  }
  if (!is.numeric(level) || length(level) != 1L || !(level > 0 && level < 1)) {
    cli::cli_abort("{.arg level} must be a probability between 0 and 1.", class = "svir_error",
                   call = NULL)
  }
  B <- object$coefficients
  k <- seq_len(nrow(B))
  if (!missing(parm)) {
    k <- if (is.character(parm)) match(parm, rownames(B)) else parm
    if (anyNA(k) || any(k < 1 | k > nrow(B))) {
      cli::cli_abort("{.arg parm} must name covariates among {.val {rownames(B)}}.",
                     class = "svir_error", call = NULL)
    }
  }
  se <- sqrt(outer(diag(object$XtXinv), diag(object$sigma)))[k, , drop = FALSE]
  est <- B[k, , drop = FALSE]
  a <- (1 - level) / 2
  z <- stats::qnorm(1 - a)
  out <- cbind(as.vector(t(est - z * se)), as.vector(t(est + z * se)))
  dimnames(out) <- list(paste(rep(rownames(est), each = ncol(B)), colnames(B), sep = ":"),
                        paste(format(100 * c(a, 1 - a), trim = TRUE, scientific = FALSE,
                                     digits = 3), "%"))
  out
}

#' Offsets for count matrices
#'
#' The usual offsets for [pln()] models, on the log scale, one per row, for
#' `offset()` in the formula: `"total"`, the log of each row's total count
#' (PLNmodels' "TSS"); `"rle"`, the log of the geometric-mean size factors
#' of DESeq2 (each row's median ratio to the columns' geometric means), in
#' the variant for sparse data ("poscounts"): the geometric means and the
#' medians use the positive counts only, so columns and rows with zeros
#' still count. The size factors are scaled to a geometric mean of 1.
#' Dense matrices and sparse `dgCMatrix` ones are accepted; a sparse one is
#' not densified.
#'
#' @param Y A count matrix (rows: samples or cells; columns: species or
#'   genes), dense or a `Matrix::dgCMatrix`.
#' @param type `"total"` or `"rle"`.
#' @return A numeric vector of length `nrow(Y)`, the log offsets.
#' @examples
#' Y <- matrix(rpois(60, 5), 10)
#' pln_offsets(Y)
#' pln_offsets(Y, "rle")
#' @export
pln_offsets <- function(Y, type = c("total", "rle")) {
  type <- svir_match_arg(type, c("total", "rle"), "type")
  sparse <- isS4(Y) && methods::is(Y, "Matrix")
  if (sparse) {
    if (!methods::is(Y, "dgCMatrix")) {
      Y <- methods::as(methods::as(methods::as(Y, "CsparseMatrix"), "generalMatrix"), "dMatrix")
    }
    x <- Y@x
    row <- Y@i + 1L
    col <- rep.int(seq_len(ncol(Y)), diff(Y@p))
  } else {
    if (is.data.frame(Y)) Y <- as.matrix(Y)
    if (!is.matrix(Y) || !is.numeric(Y)) {
      cli::cli_abort("{.arg Y} must be a numeric count matrix or a sparse {.cls dgCMatrix}.",
                     class = "svir_error", call = NULL)
    }
    nz <- which(Y != 0)
    x <- as.double(Y[nz])
    row <- (nz - 1L) %% nrow(Y) + 1L
    col <- (nz - 1L) %/% nrow(Y) + 1L
  }
  if (any(!is.finite(x)) || any(x < 0)) {
    cli::cli_abort("{.arg Y} must hold non-negative counts.", class = "svir_error", call = NULL)
  }
  keep <- x > 0
  x <- x[keep]
  row <- row[keep]
  col <- col[keep]
  n <- nrow(Y)
  empty <- setdiff(seq_len(n), row)
  if (length(empty)) {
    cli::cli_abort(c("Rows {.val {empty[seq_len(min(5L, length(empty)))]}} ({length(empty)} in all) have no counts, so they have no offset.",
                     i = "Drop the empty rows before fitting."),
                   class = "svir_error", call = NULL)
  }
  out <- if (type == "total") {
    log(as.vector(rowsum(x, row, reorder = TRUE)))
  } else {
    lg <- as.vector(rowsum(log(x), col, reorder = TRUE)) / tabulate(col)
    lgm <- numeric(ncol(Y))
    lgm[sort(unique(col))] <- lg
    ratio <- log(x) - lgm[col]
    s <- log(vapply(split(exp(ratio), row), stats::median, 0))
    s - mean(s)
  }
  names(out) <- rownames(Y)
  out
}

# The VE step: q(Z_i) = N(M_i, diag(S_i^2)) for new rows (counts Y, n x p;
# covariates X; offsets O, n x p) with the fit's B and Sigma held fixed, by
# the fit's L-BFGS (src/svir_pln.c). Returns list(M, S, elbo).
svir_pln_ve <- function(object, Y, X, O, tol = 1e-8, max_steps = 1000L) {
  if (isS4(Y)) Y <- as.matrix(Y)
  storage.mode(Y) <- "double"
  if (any(!is.finite(Y)) || any(Y < 0) || any(abs(Y - round(Y)) > 1e-8)) {
    cli::cli_abort(c("{.arg responses} must hold non-negative whole counts, with no missing values.",
                     i = "Predict rows with missing counts without {.arg responses} (unconditionally)."),
                   class = "svir_error", call = NULL)
  }
  storage.mode(X) <- "double"
  n <- nrow(Y)
  p <- ncol(Y)
  Sigma <- svir_pln_Sigma(object)
  U <- chol(Sigma)
  Om <- chol2inv(U)
  dat <- list(Y = Y, O = if (is.null(O)) NULL else matrix(as.double(O), n, p), X = X,
              P = matrix(0, ncol(X), n), lgy = sum(lgamma(Y + 1)), cov = 0L, n = n, p = p,
              d = ncol(X), Bfix = unname(object$coefficients) + 0, Omfix = Om,
              logdet_om = -2 * sum(log(diag(U))), threads = 0L)
  M0 <- log1p(Y) - (if (is.null(O)) 0 else O)
  r <- .Call(C_svir_pln_fit_r, dat, c(M0, rep(log(0.1), n * p)), as.integer(max_steps), tol)
  np <- n * p
  dn <- list(rownames(Y), colnames(object$coefficients))
  list(M = matrix(r$par[seq_len(np)], n, p, dimnames = dn),
       S = matrix(exp(r$par[np + seq_len(np)]), n, p, dimnames = dn),
       elbo = r$J)
}

# method = "qem" for pln(rank = q) (src/svir_pln_qem.c): the start (the
# VEM start's B and probabilistic PCA, the rows' factor means under it,
# prior-wide proposals), the fit, and an svi_pln object whose M and S are
# the posterior means and sds of Z - O under the final proposals.
svir_pln_qem <- function(Y, O, Orow, X, P, q, control, tt, mf, formula, call) {
  n <- nrow(Y)
  p <- ncol(Y)
  d <- ncol(X)
  K <- control$K
  Ofull <- if (!is.null(O)) O else if (!is.null(Orow)) matrix(Orow, n, p) else NULL
  M0 <- log1p(Y) - (if (is.null(Ofull)) 0 else Ofull)
  B0 <- P %*% M0
  R0 <- M0 - X %*% B0
  st <- svir_pln_pca_start(R0, q, n)
  W0 <- matrix(st[seq_len(p * q)], p, q)
  psi0 <- exp(st[p * q + seq_len(p)])
  Kq <- diag(q) + crossprod(W0 / psi0, W0)
  mu_u <- R0 %*% (W0 / psi0) %*% solve(Kq)
  state <- list(B = B0 + 0, W = W0, psi = psi0, mu_u = mu_u + 0, su = matrix(1, n, q),
                mu_e = R0 - tcrossprod(mu_u, W0), tau = matrix(sqrt(psi0), n, p, byrow = TRUE))
  dat <- list(Y = Y, O = Ofull, X = X, lgy = lgamma(Y + 1), n = n, p = p, d = d, q = q,
              threads = as.integer(if (is.null(control$threads)) 0L else control$threads))
  t0 <- proc.time()[["elapsed"]]
  r <- .Call(C_svir_pln_qem_r, dat, state,
             as.double(c(K, control$max_steps, if (is.null(control$qem_min_iter)) 30 else control$qem_min_iter,
                         0.5, 0.6)), control$seed)
  time <- proc.time()[["elapsed"]] - t0
  converged <- r$iterations < control$max_steps
  if (!converged) {
    cli::cli_warn(c("QEM stopped at {.code max_steps = {control$max_steps}} iterations before log P-hat levelled off.",
                    i = "Increase {.code control = svi_control(max_steps = )}."))
  }
  cn <- colnames(Y)
  if (is.null(cn)) cn <- paste0("Y", seq_len(p))
  B <- matrix(r$B, d, p, dimnames = list(colnames(X), cn))
  W <- matrix(r$W, p, q, dimnames = list(cn, NULL))
  psi <- stats::setNames(r$psi, cn)
  Sigma <- tcrossprod(W) + diag(psi, p)
  dimnames(Sigma) <- list(cn, cn)
  mu_u <- matrix(r$mu_u, n, q)
  su <- matrix(r$su, n, q)
  M <- X %*% B + tcrossprod(mu_u, W) + matrix(r$mu_e, n, p)
  S <- sqrt(tcrossprod(su^2, W^2) + matrix(r$tau, n, p)^2)
  dimnames(M) <- dimnames(S) <- list(rownames(Y), cn)
  tr <- r$trace
  structure(list(
    coefficients = B, sigma = Sigma, M = M, S = S,
    offset = if (is.null(O)) Orow else O,
    loadings = W, psi = psi, rank = q, globals = "point", XtXinv = NULL, X = X, Y = Y,
    elbo = mean(tr[max(1L, length(tr) - 9L):length(tr)]), trace = tr, steps = r$iterations,
    batch_size = NULL, epochs = NULL, method = "qem", K = K, ess = r$ess,
    factors = list(mean = mu_u, sd = su),
    stop_reason = if (converged) "converged" else "max_steps",
    tol = NA_real_, time = time, covariance = "rank",
    n = n, p = p, formula = formula, call = call, terms = tt,
    xlevels = stats::.getXlevels(tt, mf)),
    class = "svi_pln")
}
