# Engine output (internal units) -> "svi_fit" object (raw units).
# See dev/ARCHITECTURE.md, section 6 (layout, engine output, the object).

#' Build an svi_fit object from the engine output
#'
#' Internal. Maps the variational posterior from the engine's internal units
#' (standardised response and centred/scaled fixed-effect columns,
#' log-scales, canonical partial correlations) back to the units of the data.
#'
#' The fixed effects are an affine map of the internal coefficients, so their
#' posterior mean and covariance under the guide are exact. Standard
#' deviations, `sigma` and `phi` are exponentials of Gaussian coordinates.
#' Conditional modes of the random effects (`condval`) and their posterior sds
#' (`condsd`) average over the stored global draws with the law of total
#' variance.
#'
#' @param engine list returned by the C engine (dev/ARCHITECTURE.md, section 6).
#' @param info list returned by `svir_build_spec()` next to the spec.
#' @param call the matched call of `svi_fit()`.
#' @param control list from `svi_control()`.
#' @param method,guide character.
#' @param backend the backend that ran: a string (optionally with attribute
#'   `"reason"`) or a list with elements `backend` and `reason`.
#' @param seed the seed used.
#' @return An object of class `svi_fit`.
#' @keywords internal
#' @noRd
svir_postprocess <- function(engine, info, call = NULL, control = list(),
                             method = "svi", guide = NULL, backend = NULL,
                             seed = NULL) {
  family <- info$family
  fam <- svir_family_name(family)
  X <- info$X
  if (is.null(dim(X))) stop("info$X must be a matrix", call. = FALSE)
  re <- svir_normalise_re(info$re, n = nrow(X))
  scaling <- svir_normalise_scaling(info$scaling, X, fam)
  zi <- info$zi
  idx <- svir_global_index(ncol(X), re, fam, pz = length(zi$names))
  if (length(engine$mu) != idx$D) {
    stop(sprintf("engine returned %d global parameters, the model has %d",
                 length(engine$mu), idx$D), call. = FALSE)
  }
  if (is.null(guide)) guide <- if (!is.null(engine$L)) "fullrank" else "meanfield"

  # posterior draws of the globals (internal units), then natural units
  theta <- engine$draws
  if (is.null(theta) || NROW(theta) == 0L) {
    nd <- if (!is.null(control$ndraws)) control$ndraws else 1000L
    theta <- svir_guide_draws(engine, nd)
  }
  theta <- matrix(as.double(theta), ncol = idx$D)
  engine$draws <- theta
  bmap <- svir_beta_map(scaling, colnames(X), attr(X, "assign"))
  zmap <- if (is.null(zi)) NULL else
    svir_beta_map(c(zi$scaling, list(y_center = 0, y_scale = 1)), zi$names, attr(zi$X, "assign"))
  draws <- svir_natural_draws(theta, idx, bmap, scaling, re, fam, colnames(X), zmap, zi$names)

  # fixed effects: exact affine image of q
  Sq <- svir_guide_cov(engine, idx$beta)
  fmean <- drop(bmap$T %*% engine$mu[idx$beta]) + bmap$shift
  fvcov <- bmap$T %*% Sq %*% t(bmap$T)
  names(fmean) <- colnames(X)
  dimnames(fvcov) <- list(colnames(X), colnames(X))
  # the zero inflation's coefficients: the same exact affine map
  zfix <- NULL
  if (!is.null(zi)) {
    Sz <- svir_guide_cov(engine, idx$zi)
    zfix <- list(mean = stats::setNames(drop(zmap$T %*% engine$mu[idx$zi]) + zmap$shift, zi$names),
                 vcov = zmap$T %*% Sz %*% t(zmap$T))
    dimnames(zfix$vcov) <- list(zi$names, zi$names)
  }

  # random effects
  ranef <- lapply(seq_along(re), function(t) {
    A <- svir_re_A(theta, idx, t, re[[t]], scaling$y_scale)
    mom <- svir_re_moments(engine$m[[t]], engine$C[[t]], A, full = FALSE,
                           shift = svir_re_shift(engine, t, scaling$y_scale))
    dn <- list(re[[t]]$levels, re[[t]]$cnms)
    dimnames(mom$mean) <- dn
    dimnames(mom$sd) <- dn
    list(condval = mom$mean, condsd = mom$sd)
  })
  names(ranef) <- vapply(re, `[[`, "", "grpvar")

  bk <- svir_backend_info(backend, engine)
  elbo <- as.double(engine$elbo)
  khat <- svir_psis_khat(engine$log_ratio)

  fit <- list(
    call = call,
    formula = svir_info_formula(info, call),
    family = family,
    method = method,
    guide = guide,
    backend = bk$backend,
    backend_reason = bk$reason,
    frame = info$frame,
    na.action = if (!is.null(info$na.action)) info$na.action else attr(info$frame, "na.action"),
    X = X,
    terms_fixed = info$terms_fixed,
    xlevels = info$xlevels,
    contrasts = if (!is.null(info$contrasts)) info$contrasts else attr(X, "contrasts"),
    y = info$y,
    trials = info$trials,
    offset = info$offset,
    re = re,
    scaling = scaling,
    prior = info$prior,
    layout = info$layout,
    engine = engine,
    draws = draws,
    fixef = list(mean = fmean, vcov = fvcov),
    zi = zfix,
    zi_info = zi,
    ranef = ranef,
    elbo = elbo,
    steps = if (!is.null(engine$steps)) as.integer(engine$steps) else length(elbo),
    stop_reason = if (!is.null(engine$stop_reason)) as.character(engine$stop_reason) else NA_character_,
    time = if (!is.null(engine$time)) as.double(engine$time) else NA_real_,
    time_split = engine$time_split,
    khat = khat,
    seed = seed,
    control = control,
    nobs = nrow(X),
    index = idx,
    beta_map = bmap,
    family_name = fam
  )
  class(fit) <- "svi_fit"
  fit
}

# ---- family ------------------------------------------------------------------

svir_family_name <- function(family) {
  nm <- if (is.character(family)) family else family$family
  if (is.null(nm)) stop("the family object has no $family", call. = FALSE)
  nm <- tolower(nm)
  if (nm %in% c("negbin", "nbinom2", "negative binomial") || startsWith(nm, "negative binomial"))
    return("negbin")
  if (!nm %in% c("gaussian", "binomial", "poisson"))
    stop(sprintf("family '%s' is not supported by the GLMM methods", nm), call. = FALSE)
  nm
}

svir_linkinv <- function(family) {
  if (is.function(family$linkinv)) return(family$linkinv)
  stats::make.link(family$link)$linkinv
}

svir_linkfun <- function(family) {
  if (is.function(family$linkfun)) return(family$linkfun)
  stats::make.link(family$link)$linkfun
}

# ---- structure of the global vector --------------------------------------------

# Normalise the per-term list: grpvar, cnms, levels, group (1-based), Z, correlated.
svir_normalise_re <- function(re, n) {
  if (is.null(re)) return(list())
  lapply(re, function(r) {
    r$cnms <- as.character(r$cnms)
    r$levels <- as.character(r$levels)
    r$group <- as.integer(r$group)
    if (!is.null(r$Z) && !(is.double(r$Z) && identical(dim(r$Z), c(as.integer(n), length(r$cnms))) &&
                           is.null(rownames(r$Z)) && identical(colnames(r$Z), r$cnms))) {
      r$Z <- matrix(as.double(unname(r$Z)), nrow = n)
      colnames(r$Z) <- r$cnms
    }
    r$correlated <- isTRUE(r$correlated) && length(r$cnms) > 1L
    r
  })
}

svir_normalise_scaling <- function(scaling, X, fam = "gaussian") {
  p <- ncol(X)
  s <- if (is.null(scaling)) list() else scaling
  # only the gaussian response is standardised (dev/ARCHITECTURE.md, section 6)
  if (is.null(s$y_center) || fam != "gaussian") s$y_center <- 0
  if (is.null(s$y_scale) || fam != "gaussian") s$y_scale <- 1
  if (is.null(s$x_center)) s$x_center <- rep(0, p)
  if (is.null(s$x_scale)) s$x_scale <- rep(1, p)
  if (is.null(s$has_intercept)) s$has_intercept <- "(Intercept)" %in% colnames(X)
  s$x_center <- rep_len(as.double(s$x_center), p)
  s$x_scale <- rep_len(as.double(s$x_scale), p)
  s
}

# Positions (1-based) of each block in the global vector theta
# (dev/ARCHITECTURE.md); pz: the zero inflation's coefficients.
svir_global_index <- function(p, re, fam, pz = 0L) {
  off <- p
  sd <- vector("list", length(re))
  for (t in seq_along(re)) {
    q <- length(re[[t]]$cnms)
    sd[[t]] <- off + seq_len(q)
    off <- off + q
  }
  cpc <- vector("list", length(re))
  for (t in seq_along(re)) {
    q <- length(re[[t]]$cnms)
    if (re[[t]]$correlated && q > 1L) {
      k <- q * (q - 1L) / 2L
      cpc[[t]] <- off + seq_len(k)
      off <- off + k
    } else {
      cpc[t] <- list(NULL)
    }
  }
  sigma <- if (fam == "gaussian") (off <- off + 1L) else NA_integer_
  phi <- if (fam == "negbin") (off <- off + 1L) else NA_integer_
  zi <- if (pz > 0L) off + seq_len(pz) else integer(0)
  off <- off + pz
  list(beta = seq_len(p), sd = sd, cpc = cpc, sigma = sigma, phi = phi, zi = zi,
       D = as.integer(off))
}

# Names of the natural-scale draws columns (dev/ARCHITECTURE.md, section 6), in the order of theta.
svir_draws_names <- function(idx, re, xnames, znames = NULL) {
  sdn <- unlist(lapply(re, function(r) paste0("sd_", r$grpvar, "__", r$cnms)))
  corn <- unlist(lapply(seq_along(re), function(t) {
    if (is.null(idx$cpc[[t]])) return(NULL)
    ij <- svir_lower_pairs(length(re[[t]]$cnms))
    cn <- re[[t]]$cnms
    paste0("cor_", re[[t]]$grpvar, "__", cn[ij[, 2]], "__", cn[ij[, 1]])
  }))
  nm <- c(xnames, sdn, corn,
          if (!is.na(idx$sigma)) "sigma", if (!is.na(idx$phi)) "phi",
          if (length(znames)) paste0("zi_", znames))
  make.unique(nm, sep = "_")
}

# Row-major strictly-lower pairs (i, j), 1-based: (2,1), (3,1), (3,2), ...
svir_lower_pairs <- function(q) {
  if (q < 2L) return(matrix(integer(0), 0, 2))
  do.call(rbind, lapply(2:q, function(i) cbind(i, seq_len(i - 1L))))
}

# ---- guide ----------------------------------------------------------------

# Covariance of the guide restricted to the coordinates `which`.
svir_guide_cov <- function(engine, which) {
  if (!is.null(engine$L)) {
    L <- as.matrix(engine$L)
    Lw <- L[which, , drop = FALSE]
    Lw %*% t(Lw)
  } else {
    v <- exp(2 * as.double(engine$omega[which]))
    if (length(v) == 1L) matrix(v) else diag(v)
  }
}

svir_guide_sd <- function(engine, which) {
  if (!is.null(engine$L)) {
    L <- as.matrix(engine$L)
    sqrt(rowSums(L[which, , drop = FALSE]^2))
  } else {
    exp(as.double(engine$omega[which]))
  }
}

# Draws from the global guide in R (only when the engine returned none).
svir_guide_draws <- function(engine, ndraws) {
  D <- length(engine$mu)
  e <- matrix(stats::rnorm(ndraws * D), ndraws, D)
  if (!is.null(engine$L)) {
    e <- e %*% t(as.matrix(engine$L))
  } else {
    e <- sweep(e, 2L, exp(as.double(engine$omega)), `*`)
  }
  sweep(e, 2L, as.double(engine$mu), `+`)
}

# ---- fixed effects ------------------------------------------------------------

# beta_raw = T beta_s + shift (internal columns are centred and
# scaled except the intercept; the gaussian response is standardised).
svir_beta_map <- function(scaling, xnames, assign = NULL) {
  p <- length(xnames)
  ys <- scaling$y_scale
  xs <- scaling$x_scale
  xc <- scaling$x_center
  T <- diag(ys / xs, nrow = p)
  shift <- rep(0, p)
  icpt <- svir_intercept_col(xnames, assign, scaling$has_intercept)
  if (length(icpt)) {
    T[icpt, icpt] <- ys
    others <- setdiff(seq_len(p), icpt)
    T[icpt, others] <- -ys * xc[others] / xs[others]
    shift[icpt] <- scaling$y_center
  } else if (any(xc != 0)) {
    warning("fixed-effect columns were centred in a model without an intercept; ",
            "the raw-unit coefficients ignore the centring", call. = FALSE)
  }
  dimnames(T) <- list(xnames, xnames)
  # without an intercept a centred response has nowhere to go in beta: the
  # linear predictor in raw units carries it as a constant
  list(T = T, shift = shift, intercept = icpt,
       eta_shift = if (length(icpt)) 0 else scaling$y_center)
}

svir_intercept_col <- function(xnames, assign, has_intercept) {
  if (!isTRUE(has_intercept)) return(integer(0))
  i <- which(xnames == "(Intercept)")
  if (!length(i) && !is.null(assign)) i <- which(assign == 0L)
  if (!length(i)) i <- 1L
  i[1L]
}

# ---- natural-scale draws ---------------------------------------------------------

# theta: S x D internal draws -> S x K natural draws (the names of dev/ARCHITECTURE.md, section 6).
svir_natural_draws <- function(theta, idx, bmap, scaling, re, fam, xnames, zmap = NULL,
                               znames = NULL) {
  S <- nrow(theta)
  out <- vector("list", 0)
  beta <- theta[, idx$beta, drop = FALSE] %*% t(bmap$T)
  beta <- sweep(beta, 2L, bmap$shift, `+`)
  out$beta <- beta
  out$sd <- lapply(seq_along(re), function(t) {
    exp(theta[, idx$sd[[t]], drop = FALSE]) * scaling$y_scale
  })
  out$cor <- lapply(seq_along(re), function(t) {
    if (is.null(idx$cpc[[t]])) return(NULL)
    q <- length(re[[t]]$cnms)
    L <- svir_cpc_to_chol_draws(theta[, idx$cpc[[t]], drop = FALSE], q)
    ij <- svir_lower_pairs(q)
    vapply(seq_len(nrow(ij)), function(k) {
      i <- ij[k, 1]; j <- ij[k, 2]
      rowSums(L[, i, seq_len(j), drop = FALSE] * L[, j, seq_len(j), drop = FALSE])
    }, numeric(S))
  })
  cols <- c(list(out$beta), out$sd, out$cor[!vapply(out$cor, is.null, NA)])
  if (!is.na(idx$sigma)) cols <- c(cols, list(exp(theta[, idx$sigma]) * scaling$y_scale))
  if (!is.na(idx$phi)) cols <- c(cols, list(exp(theta[, idx$phi])))
  if (length(idx$zi)) {
    g <- theta[, idx$zi, drop = FALSE] %*% t(zmap$T)
    cols <- c(cols, list(sweep(g, 2L, zmap$shift, `+`)))
  }
  d <- do.call(cbind, lapply(cols, function(x) matrix(x, nrow = S)))
  colnames(d) <- svir_draws_names(idx, re, xnames, znames)
  d
}

#' Cholesky factor of a correlation matrix from unconstrained parameters
#'
#' Stan's `cholesky_corr` transform: `z = tanh(y)` are canonical partial
#' correlations in row-major order over the strictly lower triangle
#' ((2,1), (3,1), (3,2), ... in 1-based indices).
#'
#' @param y numeric vector of length `q (q - 1) / 2`.
#' @param q dimension.
#' @return The lower-triangular `q x q` Cholesky factor `L`; the correlation
#'   matrix is `L %*% t(L)`.
#' @keywords internal
#' @noRd
svir_cpc_to_chol <- function(y, q) {
  stopifnot(length(y) == q * (q - 1) / 2)
  L <- svir_cpc_to_chol_draws(matrix(y, nrow = 1L), q)
  matrix(L[1, , ], q, q)
}

# Vectorised over draws: y is S x q(q-1)/2, returns an S x q x q array.
svir_cpc_to_chol_draws <- function(y, q) {
  y <- as.matrix(y)
  S <- nrow(y)
  L <- array(0, c(S, q, q))
  L[, 1, 1] <- 1
  if (q < 2L) return(L)
  z <- tanh(y)
  k <- 0L
  for (i in 2:q) {
    k <- k + 1L
    L[, i, 1] <- z[, k]
    ss <- z[, k]^2
    if (i > 2L) {
      for (j in 2:(i - 1L)) {
        k <- k + 1L
        L[, i, j] <- z[, k] * sqrt(pmax(1 - ss, 0))
        ss <- ss + L[, i, j]^2
      }
    }
    L[, i, i] <- sqrt(pmax(1 - ss, 0))
  }
  L
}

# ---- random effects ---------------------------------------------------------------

# A_s = diag(sd_s) L_s for each global draw: S x q x q array, raw units.
svir_re_A <- function(theta, idx, t, r, y_scale) {
  q <- length(r$cnms)
  S <- nrow(theta)
  sd <- exp(theta[, idx$sd[[t]], drop = FALSE]) * y_scale
  if (!is.null(idx$cpc[[t]])) {
    L <- svir_cpc_to_chol_draws(theta[, idx$cpc[[t]], drop = FALSE], q)
  } else {
    L <- array(0, c(S, q, q))
    for (k in seq_len(q)) L[, k, k] <- 1
  }
  # a partially centred term: b = A_eff u, u the guide's variable
  # (svir_centring() in R/start.R), A_eff = sd^(1 - lambda) for q = 1 and
  # row k sd_k^-lambda ((1 - lambda) A_k. + lambda sd_k e_k) for q > 1 (A =
  # diag(sd) L; sd in internal units, then times y_scale)
  lam <- r$centre
  if (!is.null(lam) && lam != 0) {
    si <- exp(theta[, idx$sd[[t]], drop = FALSE])
    for (k in seq_len(q)) {
      L[, k, ] <- (1 - lam) * L[, k, ] * si[, k]^(1 - lam)
      L[, k, k] <- L[, k, k] + lam * si[, k]^(1 - lam)
    }
    return(L * y_scale)
  }
  for (k in seq_len(q)) L[, k, ] <- L[, k, ] * sd[, k]
  L
}

# Unpack per-group guide factors: J x q(q+1)/2 (row-major lower, log
# diagonal) -> J x q x q array of C.
svir_unpack_C <- function(Cp, q) {
  Cp <- matrix(as.double(Cp), ncol = q * (q + 1L) / 2L)
  J <- nrow(Cp)
  C <- array(0, c(J, q, q))
  k <- 0L
  for (i in seq_len(q)) {
    for (j in seq_len(i)) {
      k <- k + 1L
      C[, i, j] <- if (i == j) exp(Cp[, k]) else Cp[, k]
    }
  }
  C
}

# Per-draw shift of a term's random effects under the coupled guide
# (S x q, raw units): b = A z0 - shift, see src/models/glmm/glmm_coupling.c. NULL when absent.
svir_re_shift <- function(engine, t, y_scale, sel = NULL) {
  sh <- engine$shift
  if (is.null(sh) || length(sh) < t) return(NULL)
  U <- sh[[t]] * y_scale
  if (!is.null(sel)) U <- U[sel, , drop = FALSE]
  if (all(U == 0)) NULL else U
}

# Posterior moments of b_j = A z_j - u with (A, u) ~ draws (S x q x q and
# S x q) and z_j ~ N(m_j, C_j C_j^T) given them. Law of total variance:
#   E b_j = Abar m_j - ubar,
#   E b_jr b_jr' = sum_ab E[A_ra A_r'b] (V_j,ab + m_ja m_jb)
#                  - sum_b E[u_r A_r'b] m_jb - sum_a E[u_r' A_ra] m_ja + E[u_r u_r'].
# Cost O(S q^4 + J q^4) (J q^3 when full = FALSE); no S x J work.
svir_re_moments <- function(m, Cp, A, full = FALSE, shift = NULL) {
  q <- dim(A)[2]
  m <- matrix(as.double(m), ncol = q)
  J <- nrow(m)
  C <- svir_unpack_C(Cp, q)
  # second moments of z: W[j, a, b] = V_ab + m_a m_b
  W <- array(0, c(J, q, q))
  for (a in seq_len(q)) for (b in seq_len(a)) {
    v <- rowSums(C[, a, , drop = FALSE] * C[, b, , drop = FALSE]) + m[, a] * m[, b]
    W[, a, b] <- v
    W[, b, a] <- v
  }
  Abar <- matrix(colMeans(matrix(A, dim(A)[1])), q, q)
  mean <- m %*% t(Abar)
  if (!is.null(shift)) mean <- sweep(mean, 2L, colMeans(shift))
  pairs <- if (full) which(lower.tri(diag(q), diag = TRUE), arr.ind = TRUE) else cbind(seq_len(q), seq_len(q))
  cov <- if (full) array(0, c(q, q, J)) else NULL
  var <- matrix(0, J, q)
  for (k in seq_len(nrow(pairs))) {
    r <- pairs[k, 1]; rr <- pairs[k, 2]
    # E[A_ra A_r'b] over draws: q x q
    M2 <- crossprod(matrix(A[, r, ], ncol = q), matrix(A[, rr, ], ncol = q)) / dim(A)[1]
    s2 <- matrix(W, J) %*% as.vector(M2) - mean[, r] * mean[, rr]
    if (!is.null(shift)) {
      S <- dim(A)[1]
      EuA1 <- colMeans(shift[, r] * matrix(A[, rr, ], S, q)) # E[u_r A_r'b]
      EuA2 <- colMeans(shift[, rr] * matrix(A[, r, ], S, q)) # E[u_r' A_ra]
      s2 <- s2 - m %*% EuA1 - m %*% EuA2 + mean(shift[, r] * shift[, rr])
    }
    if (r == rr) var[, r] <- pmax(s2, 0)
    if (full) {
      cov[r, rr, ] <- s2
      cov[rr, r, ] <- s2
    }
  }
  list(mean = mean, sd = sqrt(var), cov = cov)
}

# ---- misc -------------------------------------------------------------------------

svir_backend_info <- function(backend, engine) {
  if (is.list(backend)) {
    b <- backend$backend
    r <- if (!is.null(backend$reason)) backend$reason else backend$detail
  } else {
    b <- backend
    r <- attr(backend, "reason")
  }
  if (is.null(b)) b <- engine$backend
  if (is.null(r)) r <- engine$backend_reason
  list(backend = if (is.null(b)) "cpu" else as.character(b)[1L],
       reason = if (is.null(r)) NA_character_ else as.character(r)[1L])
}

svir_info_formula <- function(info, call) {
  if (!is.null(info$formula)) return(info$formula)
  f <- attr(info$frame, "formula")
  if (!is.null(f)) return(f)
  if (!is.null(call$formula)) return(stats::as.formula(call$formula))
  NULL
}
