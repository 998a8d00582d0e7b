# The Poisson-lognormal model's QEM (rank q; src/models/pln/pln_qem.c) and
# its VE step for new rows (B and Sigma held; predict(responses =)).

# method = "qem" for pln(rank = q): the start (the VEM start's B and
# probabilistic PCA, the rows' factor means under it, prior-wide
# proposals) and the engine's spec and settings: the QEM driver with the
# rolling stopping rule (the last 10 iterations' mean log P-hat against the
# 10 before, after qem_min_iter, 30 by default).
svir_pln_qem_job <- function(Y, O, Orow, X, P, q, control, seed, backend) {
  n <- nrow(Y)
  p <- ncol(Y)
  d <- ncol(X)
  Ofull <- if (!is.null(O)) O else if (!is.null(Orow)) matrix(Orow, n, p) else NULL
  M0 <- log1p(Y) - (if (is.null(Ofull)) 0 else Ofull)
  B0 <- P %*% M0
  R0 <- M0 - X %*% B0
  st <- svir_pln_pca_start(R0, q, n)
  W0 <- matrix(st[seq_len(p * q)], p, q)
  psi0 <- exp(st[p * q + seq_len(p)])
  Kq <- diag(q) + crossprod(W0 / psi0, W0)
  mu_u <- R0 %*% (W0 / psi0) %*% solve(Kq)
  start <- list(B = B0 + 0, W = W0, psi = psi0, mu_u = mu_u + 0, su = matrix(1, n, q),
                mu_e = R0 - tcrossprod(mu_u, W0), tau = matrix(sqrt(psi0), n, p, byrow = TRUE))
  spec <- list(model = "pln", Y = Y, O = Ofull, X = X, P = P, lgy = 0, lgy_entries = lgamma(Y + 1),
               n = n, p = p, d = d, q = q, cov = svir_codes$pln_cov[["rank"]], qem_start = start)
  ctrl <- list(method = "qem", backend = backend, max_steps = control$max_steps, K = control$K,
               qem_eta0 = 0.5, qem_kappa = 0.6, rule = "rolling", eval_every = 10L,
               min_steps = if (is.null(control$qem_min_iter)) 30 else control$qem_min_iter,
               seed = seed,
               threads = as.integer(if (is.null(control$threads)) 0L else control$threads))
  list(spec = spec, ctrl = ctrl, control = control, Y = Y, O = O, Orow = Orow, X = X, q = q,
       K = control$K)
}

# The svi_pln object of a QEM fit: M and S are the posterior means and sds
# of Z - O under the final proposals.
svir_pln_qem_finish <- function(engine, job) {
  control <- job$control
  if (!identical(engine$stop_reason, "converged")) {
    cli::cli_warn(c("QEM stopped at {.code max_steps = {control$max_steps}} iterations before log P-hat levelled off.",
                    i = "Increase {.code control = svi_control(max_steps = )}."))
  }
  Y <- job$Y
  X <- job$X
  q <- job$q
  n <- nrow(Y)
  p <- ncol(Y)
  d <- ncol(X)
  cn <- colnames(Y)
  if (is.null(cn)) cn <- paste0("Y", seq_len(p))
  B <- matrix(engine$B, d, p, dimnames = list(colnames(X), cn))
  W <- matrix(engine$W, p, q, dimnames = list(cn, NULL))
  psi <- stats::setNames(engine$psi, cn)
  Sigma <- tcrossprod(W) + diag(psi, p)
  dimnames(Sigma) <- list(cn, cn)
  mu_u <- matrix(engine$mu_u, n, q)
  su <- matrix(engine$su, n, q)
  M <- X %*% B + tcrossprod(mu_u, W) + matrix(engine$mu_e, n, p)
  S <- sqrt(tcrossprod(su^2, W^2) + matrix(engine$tau, n, p)^2)
  dimnames(M) <- dimnames(S) <- list(rownames(Y), cn)
  tr <- engine$elbo
  structure(list(
    coefficients = B, sigma = Sigma, M = M, S = S,
    offset = if (is.null(job$O)) job$Orow else job$O,
    loadings = W, psi = psi, rank = q, residual = TRUE, globals = "point", XtXinv = NULL,
    X = X, Y = Y,
    elbo = mean(tr[max(1L, length(tr) - 9L):length(tr)]), trace = tr, steps = engine$steps,
    batch_size = NULL, epochs = NULL, method = "qem", K = job$K, ess = engine$ess,
    factors = list(mean = mu_u, sd = su),
    stop_reason = engine$stop_reason,
    tol = NA_real_, time = engine$time, backend = engine$backend,
    backend_reason = engine$backend_reason, covariance = "rank",
    n = n, p = p, formula = job$formula, call = job$call, terms = job$tt,
    xlevels = stats::.getXlevels(job$tt, job$mf)),
    class = "svi_pln")
}

# The VE step: q(Z_i) = N(M_i, diag(S_i^2)) for new rows (counts Y, n x p;
# covariates X; offsets O, n x p) with the fit's B and Sigma held fixed, by
# the fit's L-BFGS (the model's variational EM with B and Omega fixed).
# Returns list(M, S, elbo).
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
  B <- unname(object$coefficients) + 0
  O <- if (is.null(O)) NULL else matrix(as.double(O), n, p)
  spec <- list(model = "pln", Y = Y, O = O, X = X, P = matrix(0, ncol(X), n),
               lgy = sum(lgamma(Y + 1)), n = n, p = p, d = ncol(X), Bfix = B)
  pca <- svir_pln_is_pca(object)
  if (pca) {
    # PLN-PCA: q(w_i) with B and C held; the factors start at the ridge
    # projection of log(1 + Y) - O - X B on C
    C <- unname(object$loadings) + 0
    q <- ncol(C)
    R <- log1p(Y) - X %*% B - (if (is.null(O)) 0 else O)
    F0 <- R %*% C %*% solve(crossprod(C) + diag(q))
    spec <- c(spec, list(cov = svir_codes$pln_cov[["pca"]], q = q, Wfix = C,
                         par = c(F0, rep(log(0.1), n * q))))
  } else {
    U <- chol(svir_pln_Sigma(object))
    M0 <- log1p(Y) - (if (is.null(O)) 0 else O)
    spec <- c(spec, list(cov = svir_codes$pln_cov[["full"]], Omfix = chol2inv(U),
                         logdet_om = -2 * sum(log(diag(U))), par = c(M0, rep(log(0.1), n * p))))
  }
  ctrl <- list(method = "vem", backend = "cpu", max_steps = max_steps, tol_rel_obj = tol,
               threads = 0L)
  r <- svir_run(list(spec = spec, ctrl = ctrl, control = list(progress = FALSE)))
  dn <- list(rownames(Y), colnames(object$coefficients))
  if (pca) {
    nq <- n * q
    lat <- svir_pln_pca_MS(X, B, matrix(r$par[seq_len(nq)], n, q),
                           matrix(exp(r$par[nq + seq_len(nq)]), n, q), C)
    M <- lat$M
    S <- lat$S
  } else {
    np <- n * p
    M <- matrix(r$par[seq_len(np)], n, p)
    S <- matrix(exp(r$par[np + seq_len(np)]), n, p)
  }
  dimnames(M) <- dimnames(S) <- dn
  list(M = M, S = S, elbo = r$elbo_final)
}
