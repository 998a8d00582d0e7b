# Fitting the Poisson-lognormal model (see ?pln): svi_fit()'s build and
# finish for family = pln() (the registry in R/models.R), the start, the VE
# step for new rows, and QEM for rank q.

# The response of a pln() formula, evaluated in `data` (a data frame or a
# list) and then the formula's environment: a dense double matrix (a
# data frame of counts or a count vector become one), or a dgCMatrix (kept
# sparse).
svir_pln_response <- function(formula, data, abort) {
  env <- if (is.null(data) || !is.list(data)) NULL else data
  lhs <- tryCatch(eval(formula[[2L]], env, environment(formula)),
                  error = function(e) abort(c("The count matrix {.code {deparse1(formula[[2L]])}} could not be evaluated.",
                                              x = conditionMessage(e))))
  if (isS4(lhs) && methods::is(lhs, "Matrix")) {
    if (!methods::is(lhs, "dgCMatrix")) {
      lhs <- tryCatch(methods::as(methods::as(methods::as(lhs, "CsparseMatrix"), "generalMatrix"),
                                  "dMatrix"),
                      error = function(e) abort("The sparse response could not be converted to a {.cls dgCMatrix}: {conditionMessage(e)}"))
    }
    return(lhs)
  }
  name <- deparse1(formula[[2L]])
  if (is.data.frame(lhs)) {
    ok <- vapply(lhs, function(v) is.numeric(v) || is.logical(v), TRUE)
    if (!all(ok)) {
      abort(c("The count data frame {.code {name}} has non-numeric columns: {.val {names(lhs)[!ok]}}.",
              i = "Keep the count columns only, e.g. {.code as.matrix(df[, cols])}."))
    }
    lhs <- as.matrix(lhs)
  }
  if (!is.matrix(lhs) || !(is.numeric(lhs) || is.logical(lhs))) {
    abort(c("The response of a {.fn pln} model must be a numeric count matrix (rows: samples, columns: species or genes).",
            x = "{.code {name}} is {.obj_type_friendly {lhs}}.",
            i = if (is.numeric(lhs) && is.null(dim(lhs))) "For one column of counts use {.code as.matrix({name})}, or a {.fn poisson} or {.fn negbin} GLMM." else
              "Put the matrix in {.arg data} as a column, e.g. {.code d$Y <- counts}, or name it in the formula."))
  }
  storage.mode(lhs) <- "double"
  lhs
}

# The model frame of a pln() formula's right side, one row per row of the
# count matrix (n): the covariates and the offset. Missing offsets are an
# error; rows with missing covariates go by `na.action`.
svir_pln_frame <- function(formula, data, n, na.action, abort) {
  rhs <- formula[-2L]
  env <- environment(formula)
  if (is.null(data) || !is.data.frame(data)) {
    if (!is.null(data) && is.list(data)) env <- list2env(data, parent = env)
    data <- data.frame(row.names = seq_len(n))
  }
  environment(rhs) <- env
  if (nrow(data) != n) {
    abort(c("{.arg data} has {nrow(data)} row{?s}; the count matrix has {n}.",
            i = "Give one row of covariates per row of the count matrix."))
  }
  size_error <- function(e) {
    abort(c("The covariates and the offset must have one value per row of the count matrix ({n}).",
            x = conditionMessage(e)))
  }
  mf0 <- tryCatch(stats::model.frame(rhs, data, na.action = stats::na.pass), error = size_error)
  if (nrow(mf0) != n) size_error(simpleError(sprintf("the model frame has %d rows", nrow(mf0))))
  O <- stats::model.offset(mf0)
  if (!is.null(O) && anyNA(O)) {
    bad <- if (is.matrix(O)) which(rowSums(is.na(O)) > 0) else which(is.na(O))
    abort(c("The offset is missing in {length(bad)} row{?s} (such as row{?s} {utils::head(bad, 3)}).",
            i = "Fix or drop these rows: {.fn pln} needs every offset."))
  }
  mf <- stats::model.frame(rhs, data, na.action = na.action)
  mf
}

# svi_fit() for family = pln(): checks, the objective's data, L-BFGS, the

# svi_fit() for family = pln(): the checks, the engine's spec (the model's
# data, its start) and settings.
svir_pln_build <- function(formula, data, family, prior, guide, method, control, backend, seed,
                           na.action, call) {
  abort <- function(msg, .envir = parent.frame()) {
    cli::cli_abort(msg, class = "svir_error", call = call, .envir = .envir)
  }
  if (method == "qem" && is.null(family$rank)) {
    abort(c("{.code method = \"qem\"} fits {.fn pln} models with a rank: the latent dimension it samples.",
            i = "Use {.code pln(rank = q, residual = TRUE)}, or {.code method = \"svi\"} for a full, diagonal or spherical covariance."))
  }
  pca <- svir_pln_is_pca(family)
  if (pca && method == "qem") {
    abort(c("{.code method = \"qem\"} fits the factor model with residual variances, {.code Sigma = W W' + diag(psi)}.",
            i = "Use {.code pln(rank = {family$rank}, residual = TRUE)}, or {.code method = \"svi\"} for PLN-PCA."))
  }
  if (pca && !is.null(control$batch_size)) {
    abort(c("A PLN-PCA fit ({.code pln(rank = {family$rank})}) runs in full batches: it keeps {family$rank} latent factors per row, not {.code n x p} arrays, so minibatches would save little memory.",
            i = "Leave {.arg batch_size} as {.code NULL}, or use {.code pln(rank = {family$rank}, residual = TRUE)} in minibatches."))
  }
  if (pca && identical(backend, "cuda")) {
    abort(c("PLN-PCA ({.code pln(rank = {family$rank})}) runs on the CPU only in this version.",
            i = "Use {.code backend = \"cpu\"}, or {.code pln(rank = {family$rank}, residual = TRUE)} on the GPU."))
  }
  if (method == "qem" && !is.null(control$batch_size)) {
    abort(c("{.code method = \"qem\"} uses every row in each iteration.",
            i = "Leave {.arg batch_size} as {.code NULL}, or use {.code method = \"svi\"}."))
  }
  if (!is.null(prior)) {
    cli::cli_warn("{.arg prior} is not used by {.fn pln} fits (B and Sigma have flat priors).")
  }
  # full-batch variational EM on the CPU or the device, minibatches and QEM
  # on the CPU: the backend layer decides (and refuses)
  be <- svir_choose_backend(backend, model = "pln", method = if (method == "qem") "qem" else "vem",
                            minibatch = !is.null(control$batch_size), call = call)
  if (!inherits(formula, "formula") || length(formula) != 3L) {
    abort("{.arg formula} must be a two-sided formula with the count matrix on the left, e.g. {.code Y ~ x}.")
  }
  if (length(lme4::findbars(formula))) {
    abort(c("{.fn pln} takes no random-effect terms such as {.code (1 | g)}.",
            i = "The rows' latent effects are the model's random effects."))
  }
  if (missing(data)) data <- NULL
  Yin <- svir_pln_response(formula, data, abort)
  Ysp <- if (is.matrix(Yin)) NULL else Yin
  if (anyNA(if (is.null(Ysp)) Yin else Ysp@x)) {
    bad <- if (is.null(Ysp)) which(rowSums(is.na(Yin)) > 0) else
      unique(Ysp@i[is.na(Ysp@x)] + 1L)
    abort(c("The count matrix has missing values in {length(bad)} row{?s} (such as row{?s} {utils::head(bad, 3)}).",
            i = "Drop these rows (with their covariates) or fill them: {.fn pln} needs every count."))
  }
  mf <- svir_pln_frame(formula, data, nrow(Yin), na.action, abort)
  nas <- as.integer(attr(mf, "na.action"))
  if (length(nas)) Yin <- Yin[-nas, , drop = FALSE]
  n <- nrow(Yin)
  p <- ncol(Yin)
  if (n < 1L) abort("The count matrix has no rows{if (length(nas)) ' with complete covariates' else ''}.")
  x <- if (is.null(Ysp)) Yin else Yin@x
  bad <- !is.finite(x) | x < 0 | abs(x - round(x)) > 1e-8
  if (any(bad)) {
    abort("The counts must be non-negative whole numbers (found {sum(bad)} other value{?s}, such as {.val {utils::head(unique(x[bad]), 3)}}).")
  }
  if (is.null(Ysp)) {
    Y <- Yin
    colsum <- colSums(Y)
  } else {
    Ysp <- Yin
    colsum <- numeric(p)
    nzc <- diff(Ysp@p)
    colsum[nzc > 0] <- rowsum(Ysp@x, rep.int(seq_len(p), nzc))[, 1]
  }
  cn <- colnames(Yin)
  if (is.null(cn)) cn <- paste0("Y", seq_len(p))
  svir_pln_check_memory(n, p, batch = control$batch_size, qem = method == "qem", dense = is.null(Ysp),
                        q = if (pca) family$rank else NULL, d = ncol(mf), abort = abort)
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
  prior <- if (bayes && is.null(rank)) svir_pln_sigma_prior(family, p, n, d) else NULL
  if (cov == 0L && p >= nd && is.null(prior)) {
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
    job <- svir_pln_qem_job(Y, O, Orow, X, P, rank, control, seed, backend)
    return(c(job, list(qem = TRUE, tt = tt, mf = mf, formula = formula, call = call,
                       family = family)))
  }
  if (pca) cov <- svir_codes$pln_cov[["pca"]]
  dat <- list(model = "pln", O = O, Orow = Orow, X = X, P = P, cov = cov, q = rank,
              nd = as.double(nd), n = n, p = p, d = d,
              k0 = if (is.null(prior)) 0 else prior$k0, s0 = if (is.null(prior)) 0 else prior$scale)
  # the counts: dense, or a dgCMatrix's slots
  if (is.null(Ysp)) {
    dat$Y <- Y
    dat$lgy <- sum(lgamma(Y + 1))
  } else {
    dat$Yp <- Ysp@p
    dat$Yi <- Ysp@i
    dat$Yx <- as.double(Ysp@x)
    dat$lgy <- sum(lgamma(Ysp@x + 1))
  }
  # PLNmodels' tolerance on the relative change of the ELBO: 1e-6 when n >=
  # 1.5 p, else 1e-8 (control$pln_tol, set by hand, overrides it: dev/)
  tol <- if (!is.null(control$pln_tol)) control$pln_tol else if (n >= 1.5 * p) 1e-6 else 1e-8
  batch <- control$batch_size
  if (!is.null(batch) && batch > n) {
    abort(c("{.arg batch_size} ({batch}) is larger than the number of rows ({n}).",
            i = "Use a value in 1..{n}, or {.code NULL} for full batches."))
  }
  if (pca) {
    # PLN-PCA (src/models/pln/pln_pca.c): the parameters are the factors'
    # means and log sds (n x q), C and B. Nothing of size n x p is made here
    # beyond a dense response's log1p (svir_pln_pca_init()).
    if (!is.null(control$pln_block)) dat$block <- as.integer(control$pln_block)
    dat$par <- svir_pln_pca_init(if (is.null(Ysp)) Y else Ysp, O, Orow, X, P, rank)
  } else if (is.null(batch)) {
    # start: M at log(1 + Y) less the offset, S = 0.1 (minibatch fits make
    # the same start a batch at a time in C and keep no n x p locals)
    if (is.null(Ysp)) {
      M0 <- log1p(Y)
    } else {
      M0 <- matrix(0, n, p)
      M0[cbind(Ysp@i + 1L, rep.int(seq_len(p), diff(Ysp@p)))] <- log1p(Ysp@x)
    }
    if (!is.null(O)) M0 <- M0 - O else if (!is.null(Orow)) M0 <- M0 - Orow
    par0 <- c(M0, rep(log(0.1), n * p))
    if (!is.null(rank)) par0 <- c(par0, svir_pln_pca_start(M0 - X %*% (P %*% M0), rank, nd))
    dat$par <- par0
  }
  if (!is.null(batch)) {
    # minibatches of rows: streamed variational EM (src/models/pln/pln_mb.c)
    dat$inner <- as.integer(if (is.null(control$pln_inner)) 50L else control$pln_inner)
    dat$fa_iters <- 5L
    dat$ve_tol <- if (is.null(control$pln_ve_tol)) tol / 100 else control$pln_ve_tol
    dat$switch_tol <- if (is.null(control$pln_switch)) 1e-4 else control$pln_switch
  }
  if (!is.null(Ysp) && (pca || !is.null(batch))) {
    # minibatches and PLN-PCA visit sparse counts by rows
    Yt <- Matrix::t(Ysp)
    dat$Rp <- Yt@p
    dat$Rj <- Yt@i
    dat$Rx <- as.double(Yt@x)
  }
  ctrl <- list(method = "vem", backend = backend, max_steps = control$max_steps,
               tol_rel_obj = tol, batch_size = batch, seed = seed,
               threads = as.integer(if (is.null(control$threads)) 0L else control$threads))
  list(spec = dat, ctrl = ctrl, control = control, qem = FALSE, family = family, X = X,
       Y = if (is.null(Ysp)) Y else Ysp, O = O, Orow = Orow, rank = rank, bayes = bayes, prior = prior,
       batch = batch, tol = tol, n = n, p = p, d = d, cn = cn, tt = tt, mf = mf,
       formula = formula, call = call, pca = pca)
}

# The svi_pln object from the engine's list (variational EM, or QEM).
svir_pln_finish <- function(engine, job) {
  if (job$qem) return(svir_pln_qem_finish(engine, job))
  control <- job$control
  batch <- job$batch
  X <- job$X
  n <- job$n
  p <- job$p
  d <- job$d
  cn <- job$cn
  rank <- job$rank
  family <- job$family
  if (!identical(engine$stop_reason, "converged")) {
    cli::cli_warn(c("The fit stopped at {.code max_steps = {control$max_steps}} {if (is.null(batch)) 'iterations' else 'minibatch steps'} before the ELBO converged.",
                    i = "Increase {.code control = svi_control(max_steps = )}."))
  }
  # the ELBO's constants from q(B) under globals = "bayes" (src/models/pln/pln_eval.c),
  # and from Sigma's prior and q(Sigma)
  const <- if (job$bayes && d > 0) {
    d * p / 2 * log(2 * pi) - p / 2 * as.numeric(determinant(crossprod(X))$modulus)
  } else 0
  shift <- 0
  if (!is.null(job$prior)) {
    # the ELBO of the returned q(Z) q(B) q(Sigma): the engine's objective
    # less w log |K| plus constants (svir_pln_prior_elbo); the trace (the
    # objective the fit climbed) is shifted to end at it
    pe <- svir_pln_prior_elbo(job$prior, family$covariance, n, p, d)
    const <- const + pe$const
    shift <- -pe$w * as.numeric(determinant(engine$Sigma)$modulus)
  }
  if (isTRUE(job$pca)) return(svir_pln_pca_finish(engine, job))
  np <- n * p
  Y <- job$Y
  rn <- rownames(Y)
  B <- engine$B
  dimnames(B) <- list(colnames(X), cn)
  Sigma <- engine$Sigma
  dimnames(Sigma) <- list(cn, cn)
  M <- S <- W <- psi <- NULL
  if (!is.null(batch)) {
    # minibatch fits keep no n x p locals: the verbs run the VE step for
    # them when asked (svir_pln_latent)
    if (!is.null(rank)) {
      W <- matrix(engine$W, p, rank, dimnames = list(cn, NULL))
      psi <- stats::setNames(as.double(engine$psi), cn)
    }
  } else {
    M <- matrix(engine$par[seq_len(np)], n, p, dimnames = list(rn, cn))
    S <- matrix(exp(engine$par[np + seq_len(np)]), n, p, dimnames = dimnames(M))
  }
  if (is.null(batch) && !is.null(rank)) {
    W <- matrix(engine$par[2 * np + seq_len(p * rank)], p, rank, dimnames = list(cn, NULL))
    psi <- stats::setNames(exp(engine$par[2 * np + p * rank + seq_len(p)]), cn)
  }
  structure(list(
    coefficients = B, sigma = Sigma, M = M, S = S,
    offset = if (is.null(job$O)) job$Orow else job$O,
    loadings = W, psi = psi, rank = rank, globals = family$globals,
    XtXinv = if (job$bayes && d > 0) solve(crossprod(X)) else NULL,
    sigma_prior = job$prior,
    sigma_post = if (is.null(job$prior)) NULL else svir_pln_sigma_q(job$prior, family$covariance, Sigma, n),
    X = X, Y = Y,
    elbo = engine$elbo_final + const + shift, trace = engine$elbo + const + shift, steps = engine$steps,
    batch_size = batch, epochs = engine$epochs,
    stop_reason = engine$stop_reason,
    tol = job$tol, time = engine$time, backend = engine$backend,
    backend_reason = engine$backend_reason,
    covariance = if (is.null(rank)) family$covariance else "rank",
    residual = if (is.null(rank)) NULL else TRUE,
    n = n, p = p, formula = job$formula, call = job$call, terms = job$tt,
    xlevels = stats::.getXlevels(job$tt, job$mf)),
    class = "svi_pln")
}

# PLN-PCA's start: W and log psi of probabilistic PCA of the start's latent
# residuals R (n x p): the top q principal axes of C = (R'R + 0.01 n I) /
# nd, W = U (lambda - s2)^(1/2), psi = s2 (the mean of the other
# eigenvalues), by eigen() for p <= 500 and by a few subspace iterations
# (deterministic, started at the data's first rows) above.
# The large products of the starts in blocks of rows of about 1e9 flops,
# with R's interrupt check between them (one BLAS call is not
# interrupted, and at n p = 10^8 one takes seconds): blocks of `n` rows
# for `per` flops a row; prod_rows: A %*% V; cross_rows: crossprod(A, B)
# (summed over the blocks); colsq: colSums(A^2). Sparse A: one call
# (products of sparse matrices cost their non-zeros, not n p). `flops`:
# the block size (smaller in the tests).
svir_blocks <- function(n, per, flops = 1e9) {
  m <- max(64L, as.integer(min(n, flops / max(per, 1))))
  split(seq_len(n), ceiling(seq_len(n) / m))
}
svir_prod_rows <- function(A, V, flops = 1e9) {
  if (!is.matrix(A)) return(as.matrix(A %*% V))
  out <- matrix(0, nrow(A), ncol(V))
  for (b in svir_blocks(nrow(A), 2 * ncol(A) * ncol(V), flops)) {
    .Call(C_svir_check_interrupt_r)
    out[b, ] <- A[b, , drop = FALSE] %*% V
  }
  out
}
svir_cross_rows <- function(A, B = A, flops = 1e9) {
  if (!is.matrix(A) || !is.matrix(B)) return(as.matrix(Matrix::crossprod(A, B)))
  out <- 0
  for (b in svir_blocks(nrow(A), 2 * ncol(A) * ncol(B), flops)) {
    .Call(C_svir_check_interrupt_r)
    out <- out + crossprod(A[b, , drop = FALSE], B[b, , drop = FALSE])
  }
  out
}
svir_colsq <- function(A, flops = 1e9) {
  out <- 0
  for (b in svir_blocks(nrow(A), 2 * ncol(A), flops)) {
    .Call(C_svir_check_interrupt_r)
    out <- out + colSums(A[b, , drop = FALSE]^2)
  }
  out
}

svir_pln_pca_start <- function(R, q, nd) {
  n <- nrow(R)
  p <- ncol(R)
  if (p <= 500L) {
    e <- eigen((svir_cross_rows(R) + diag(0.01 * n, p)) / nd, symmetric = TRUE)
    lam <- e$values
    U <- e$vectors[, seq_len(q), drop = FALSE]
    s2 <- mean(lam[-seq_len(q)])
    lam <- lam[seq_len(q)]
  } else {
    k <- min(p, q + 10L)
    Q <- qr.Q(qr(t(R[seq_len(min(n, k)), , drop = FALSE] + 1e-3)))
    for (it in 1:4) Q <- qr.Q(qr(svir_cross_rows(R, svir_prod_rows(R, Q))))
    Cq <- (crossprod(svir_prod_rows(R, Q)) + 0.01 * n * diag(ncol(Q))) / nd
    e <- eigen(Cq, symmetric = TRUE)
    U <- Q %*% e$vectors[, seq_len(q), drop = FALSE]
    lam <- e$values[seq_len(q)]
    s2 <- (sum(svir_colsq(R)) + 0.01 * n * p) / nd / p
    s2 <- max((s2 * p - sum(lam)) / (p - q), 1e-3 * s2)
  }
  s2 <- max(s2, 1e-3)
  W <- U %*% diag(sqrt(pmax(lam - s2, 1e-3)), q)
  c(W, rep(log(s2), p))
}

# PLN-PCA's start (src/models/pln/pln_pca.c), with no n x p matrix but a
# dense response's log1p: B from the least-squares fit of L = log(1 + Y)
# less the offsets, then the top q singular vectors of the residuals R = L
# - O - X B by a randomised subspace iteration (q + 5 vectors, four
# passes, from a fixed start) that touches R only through products R V and
# R'U; the factors F = sqrt(n) U_q (unit variance) and C = V_q D_q /
# sqrt(n), so F C' is R's best rank-q approximation. Returns the
# parameters [F, log S = log 0.1, C, B].
svir_pln_pca_init <- function(Y, O, Orow, X, P, q) {
  n <- nrow(Y)
  p <- ncol(Y)
  L <- Y
  if (isS4(L)) L@x <- log1p(L@x) else L <- log1p(L)
  B0 <- as.matrix(P %*% L)
  if (!is.null(O)) B0 <- B0 - P %*% O
  if (!is.null(Orow)) B0 <- B0 - (P %*% Orow) %*% matrix(1, 1, p)
  Rv <- function(V) {
    out <- svir_prod_rows(L, V) - X %*% (B0 %*% V)
    if (!is.null(O)) out <- out - O %*% V
    if (!is.null(Orow)) out <- out - outer(Orow, colSums(V))
    out
  }
  Rtv <- function(U) {
    out <- svir_cross_rows(L, U) - crossprod(B0, crossprod(X, U))
    if (!is.null(O)) out <- out - crossprod(O, U)
    if (!is.null(Orow)) out <- out - matrix(1, p, 1) %*% crossprod(Orow, U)
    out
  }
  k <- min(p, n, q + 5L)
  V <- cos(outer(seq_len(p), seq_len(k)) * 0.7) + outer(seq_len(p), seq_len(k), "==")
  for (it in 1:4) {
    Q <- qr.Q(qr(Rv(V)))
    V <- Rtv(Q)
  }
  sv <- svd(V) # V = R'Q = U D W', so R ~ Q W D U'
  keep <- seq_len(q)
  Fm <- sqrt(n) * Q %*% sv$v[, keep, drop = FALSE]
  C0 <- sv$u[, keep, drop = FALSE] * rep(sv$d[keep] / sqrt(n), each = p)
  c(Fm, rep(log(0.1), n * q), C0, B0)
}

# The svi_pln object of a PLN-PCA fit: the factors' means and sds (n x q),
# the loadings C and B from the point; Sigma = C C', and M and S (n x p)
# are computed when a method asks (svir_pln_Sigma, svir_pln_latent)
svir_pln_pca_finish <- function(engine, job) {
  n <- job$n
  p <- job$p
  d <- job$d
  q <- job$rank
  cn <- job$cn
  par <- engine$par
  nq <- n * q
  Fm <- matrix(par[seq_len(nq)], n, q)
  Fs <- matrix(exp(par[nq + seq_len(nq)]), n, q)
  C <- matrix(par[2 * nq + seq_len(p * q)], p, q, dimnames = list(cn, NULL))
  B <- matrix(par[2 * nq + p * q + seq_len(d * p)], d, p, dimnames = list(colnames(job$X), cn))
  rownames(Fm) <- rownames(Fs) <- rownames(job$Y)
  structure(list(
    coefficients = B, sigma = NULL, M = NULL, S = NULL,
    offset = if (is.null(job$O)) job$Orow else job$O,
    loadings = C, psi = NULL, rank = q, residual = FALSE, factors = list(mean = Fm, sd = Fs),
    globals = "point", XtXinv = NULL, X = job$X, Y = job$Y,
    elbo = engine$elbo_final, trace = engine$elbo, steps = engine$steps,
    batch_size = NULL, epochs = engine$epochs, stop_reason = engine$stop_reason,
    tol = job$tol, time = engine$time, backend = engine$backend,
    backend_reason = engine$backend_reason, covariance = "rank",
    n = n, p = p, formula = job$formula, call = job$call, terms = job$tt,
    xlevels = stats::.getXlevels(job$tt, job$mf)),
    class = "svi_pln")
}

# The memory a pln() fit needs, refused before anything of size n x p is
# made when it exceeds what the machine has available. Doubles per count,
# from the peak resident memory of fits with n = 20000, p = 300 (R's copies
# included; dev/pln_memory.R): full-batch variational EM 46 (M and S, L-BFGS's
# gradients and its five pairs of both, the objective's work), QEM 18. The
# latent layer is n x p in those fits, whatever the rank or covariance.
# Minibatch fits keep no latent layer: R's copies of dense counts (4 n p),
# a batch's work (40 m p: its counts, offsets, locals and L-BFGS) and the
# sums and globals (10 p^2). options(svir.check_memory = FALSE) turns the
# check off.
svir_pln_memory <- function(n, p, batch = NULL, qem = FALSE, q = NULL, d = 1, dense = TRUE) {
  if (!is.null(q)) {
    # PLN-PCA: L-BFGS's 16 vectors of the 2 n q + p (q + d) parameters, the
    # start's 2 n (q + 5) and X (n d), and the objective's blocks (3 x 2^18)
    L <- 2 * as.double(n) * q + as.double(p) * (q + d)
    return(8 * (16 * L + 2 * as.double(n) * (q + 5) + as.double(n) * d + 3 * 2^18) + 100e6)
  }
  if (!is.null(batch) && !qem) {
    m <- min(as.double(batch), n)
    return(8 * ((if (dense) 4 * as.double(n) * p else 0) + 40 * m * p + 10 * as.double(p)^2) +
             100e6)
  }
  per <- if (qem) 18 else 46
  8 * as.double(n) * p * per + 100e6
}

svir_pln_check_memory <- function(n, p, batch, qem, abort, q = NULL, d = 1, dense = TRUE) {
  if (isFALSE(getOption("svir.check_memory"))) return(invisible())
  need <- svir_pln_memory(n, p, batch, qem, q, d, dense)
  have <- svir_mem_available()
  if (is.na(have) || need <= 0.9 * have) return(invisible())
  gb <- function(b) format(b / 1e9, digits = 3)
  if (!is.null(q)) {
    abort(c("This {.fn pln} fit of rank {q} needs about {gb(need)} GB ({n} rows x {p} columns); this machine has {gb(have)} GB available.",
            i = "It grows with n x q: fit fewer rows, or a lower rank.",
            i = "{.code options(svir.check_memory = FALSE)} skips this check."))
  }
  mb_need <- svir_pln_memory(n, p, batch = min(n, 1000L), dense = dense)
  abort(c("This {.fn pln} fit needs about {gb(need)} GB ({n} rows x {p} columns); this machine has {gb(have)} GB available.",
          i = if (is.null(batch) && !qem && mb_need <= 0.9 * have)
            "Minibatches of rows need about {gb(mb_need)} GB: {.code control = svi_control(batch_size = 1000)}."
          else if (!is.null(batch)) "Use smaller minibatches, or fit fewer columns (the most variable ones)."
          else "Fit fewer columns (the most variable ones) or a subset of rows; minibatches need about {gb(mb_need)} GB.",
          i = "{.code backend = \"cuda\"} needs about {gb(8 * as.double(n) * p * 39)} GB of GPU memory instead (39 doubles per count).",
          i = if (is.null(q)) "{.code pln(rank = q)} (PLN-PCA) keeps q factors per row instead of an n x p latent layer: about {gb(svir_pln_memory(n, p, q = 10L, d = d))} GB for q = 10.",
          i = "{.code options(svir.check_memory = FALSE)} skips this check."))
}

# MemAvailable of /proc/meminfo in bytes, or NA where there is none
svir_mem_available <- function() {
  if (!file.exists("/proc/meminfo")) return(NA_real_)
  l <- grep("^MemAvailable:", readLines("/proc/meminfo", warn = FALSE), value = TRUE)
  if (!length(l)) return(NA_real_)
  as.double(gsub("[^0-9]", "", l[1])) * 1024
}

# Sigma's conjugate prior under pln(globals = "bayes") (no rank): the
# inverse-Wishart(df, scale I) for a full Sigma; for a diagonal or spherical
# one each variance inverse-gamma(shape a0 = (df - p + 1) / 2, scale / 2),
# the full prior's marginal. The latent layer is fitted with Sigma at its
# posterior mean K = (C + scale I) / (n - d + k0), C the latent residuals'
# second moment (src/models/pln/pln_eval.c; spherical: (tr C + scale) / ((n
# - d + k0) p)), k0 = df - p - 1 (spherical: (df - p - 1) / p); dev/PLN.md
# has why (the mean-field optimum, with E[Sigma^-1], is further from NUTS).
svir_pln_sigma_prior <- function(family, p, n, d) {
  df <- if (is.null(family$sigma_df)) p + 1 else family$sigma_df
  if (!(df > p - 1)) {
    cli::cli_abort(c("{.arg sigma_df} must be more than the number of count columns less 1 ({p - 1}) for a proper inverse-Wishart prior; it is {df}.",
                     i = "Leave {.arg sigma_df} as {.code NULL} for {p + 1}."),
                   class = "svir_error", call = NULL)
  }
  a0 <- (df - p + 1) / 2
  k0 <- if (family$covariance == "spherical") (df - p - 1) / p else df - p - 1
  if (!(n - d + k0 > 0)) {
    cli::cli_abort(c("{.code globals = \"bayes\"} with {.code sigma_df = {df}} needs at least {ceiling(p + 2 - df + d)} rows; the data have {n}.",
                     i = "Use a larger {.arg sigma_df}."),
                   class = "svir_error", call = NULL)
  }
  list(df = df, scale = family$sigma_scale, shape = a0, k0 = k0)
}

# log of the multivariate gamma function Gamma_p(a)
svir_lmvgamma <- function(a, p) p * (p - 1) / 4 * log(pi) + sum(lgamma(a + (1 - seq_len(p)) / 2))

# The ELBO of the fit's q(Z) q(B) q(Sigma) from the engine's objective J and
# K: ELBO = J - w log |K| + const (w = (p + 1) / 2, 1 or 1 / p for a full,
# diagonal or spherical Sigma), the expectations of log p(Sigma) and log
# p(Z | B, Sigma) and the entropies of q(B) and q(Sigma) (dev/PLN.md).
# Returns list(w, const), beside q(B)'s constant the caller adds (d p / 2
# log(2 pi) - p / 2 log |X'X|).
svir_pln_prior_elbo <- function(prior, covariance, n, p, d) {
  s0 <- prior$scale
  a0 <- prior$shape
  base <- n * p / 2
  if (covariance == "full") {
    nu0 <- prior$df
    nu <- nu0 + n
    list(w = (p + 1) / 2,
         const = base - nu * p / 2 * log(nu - p - 1) + nu0 * p / 2 * log(s0) + n * p / 2 * log(2) -
           svir_lmvgamma(nu0 / 2, p) + svir_lmvgamma(nu / 2, p))
  } else {
    m <- if (covariance == "diagonal") p else 1
    a <- a0 + if (covariance == "diagonal") n / 2 else n * p / 2
    list(w = if (covariance == "diagonal") 1 else 1 / p,
         const = base + m * (-a * log(a - 1) + a0 * log(s0 / 2) - lgamma(a0) + lgamma(a)))
  }
}

# q(Sigma), the conjugate posterior given q(Z) and q(B), whose mean is the
# engine's K (the fit's `sigma`): each variance's marginal inverse-gamma
# (shape, rate). Full:
# inverse-Wishart(nu = n + df, (nu - p - 1) K), whose Sigma_jj is
# inverse-gamma((nu - p + 1) / 2, (nu - p - 1) K_jj / 2); diagonal and
# spherical: inverse-gamma(a, (a - 1) K_jj), a = a0 + n / 2 (a0 + n p / 2).
svir_pln_sigma_q <- function(prior, covariance, K, n) {
  p <- nrow(K)
  if (covariance == "full") {
    nu <- prior$df + n
    list(shape = rep((nu - p + 1) / 2, p), rate = (nu - p - 1) * diag(K) / 2, df = nu)
  } else {
    a <- prior$shape + if (covariance == "diagonal") n / 2 else n * p / 2
    list(shape = rep(a, p), rate = (a - 1) * diag(K), df = NULL)
  }
}

# The PLN calibration data (issue 16, point 7; bench/nuts/build_pln_ref.R
# and tests/testthat/test-pln-nuts.R): vegan's mite counts, the 15 most
# abundant species (by total count), water content in units of 100 g/L and
# the log total count of each core over all 35 species as the offset.
svir_mite15 <- function() {
  e <- new.env()
  utils::data("mite", "mite.env", package = "vegan", envir = e)
  m <- as.matrix(e$mite)
  top <- order(colSums(m), decreasing = TRUE)[1:15]
  d <- data.frame(water = e$mite.env$WatrCont / 100)
  d$Y <- m[, top]
  d$lib <- log(rowSums(m))
  d
}
