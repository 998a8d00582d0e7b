# Where a GLMM fit starts, and what the data alone cannot tell.
#
# The fixed effects start at the posterior mode of the GLM without random
# effects under the fit's own priors (a penalised IRLS): under separation
# the unpenalised estimate runs off to infinity while the posterior stays
# finite, and a start far out on that ridge is never left. The same
# penalised fit against glm()'s unpenalised one finds the coefficients the
# data do not bound (separation), which the fit reports.

# The priors of the p fixed effects as a normal's precision and mean, in
# internal units: a normal(m, s) gives 1 / s^2, a Student-t its curvature
# at the mode, (df + 1) / (df s^2); a flat prior 0.
svir_beta_penalty <- function(spec, p) {
  k <- seq_len(p)
  type <- spec$prior_type[k]
  s <- spec$prior_scale[k]
  df <- spec$prior_df[k]
  codes <- svir_codes$prior
  prec <- ifelse(type == codes[["normal"]], 1 / s^2,
                 ifelse(type == codes[["student_t"]], (df + 1) / (df * s^2), 0))
  list(prec = prec, mean = spec$prior_loc[k])
}

# The posterior mode of a GLM (family `fam`, prior weights `w`, offset
# `off`) under independent normal priors (precision `prec`, mean `m`) by
# IRLS with step halving, to a relative change of tol (or maxit steps).
# Returns the coefficients, the curvature matrix of the data part (X'WX)
# and the fitted means.
svir_pen_irls <- function(X, y, w, off, fam, prec, m, maxit = 100L, tol = 1e-10) {
  # (the working weights and residuals: svir_working())
  p <- ncol(X)
  mu <- if (fam$family == "binomial") (w * y + 0.5) / (w + 1) else y + 0.1
  eta <- fam$linkfun(mu)
  beta <- rep(0, p)
  obj <- function(b, mu) sum(fam$dev.resids(y, mu, w)) + sum(prec * (b - m)^2)
  cur <- Inf
  for (it in seq_len(maxit)) {
    wk <- svir_working(fam, y, w, eta, mu)
    W <- wk$W
    z <- eta - off + wk$r
    A <- crossprod(X * sqrt(W))
    cand <- solve(A + diag(prec, p), crossprod(X, W * z) + prec * m)[, 1]
    # step halving keeps the penalised deviance going down
    for (h in 0:30) {
      b_new <- beta + (cand - beta) / 2^h
      eta_new <- off + drop(X %*% b_new)
      mu_new <- fam$linkinv(eta_new)
      val <- obj(b_new, mu_new)
      if (is.finite(val) && val <= cur + 1e-12 * abs(cur)) break
    }
    if (!is.finite(val)) break
    done <- is.finite(cur) && abs(cur - val) <= tol * (abs(val) + 0.1)
    beta <- b_new
    eta <- eta_new
    mu <- mu_new
    cur <- val
    if (done) break
  }
  W <- svir_working(fam, y, w, eta, mu)$W
  list(beta = beta, A = crossprod(X * sqrt(W)), mu = mu)
}

# A GLM's working weights W = w mu'(eta)^2 / V(mu) and working residuals
# (y - mu) / mu'(eta) at eta (mu = linkinv(eta) unless given), each 0 where
# not finite: IRLS's (svir_pen_irls) and the centring rule's (svir_centring).
svir_working <- function(fam, y, w, eta, mu = fam$linkinv(eta)) {
  me <- fam$mu.eta(eta)
  W <- w * me^2 / fam$variance(mu)
  W[!is.finite(W)] <- 0
  r <- (y - mu) / me
  r[!is.finite(r)] <- 0
  list(W = W, r = r, mu = mu)
}

# The response and weights a GLM fit sees: binomial successes become
# proportions weighted by their trials.
svir_glm_yw <- function(spec) {
  y <- spec$y
  w <- if (is.null(spec$weights)) rep(1, length(y)) else spec$weights
  if (spec$family == svir_codes$family[["binomial"]]) {
    tr <- if (is.null(spec$trials)) rep(1, length(y)) else spec$trials
    y <- ifelse(tr > 0, y / tr, 0)
    w <- w * tr
  }
  list(y = y, w = w)
}

# Starting values for the means of the global guide, in internal units:
# fixed effects from the penalised GLM without random effects (least
# squares for the gaussian family), scales at moderate values. Attributes:
# "glm_se" (the fixed effects' standard errors, for QEM's start) and
# "separation" (svir_separation()'s finding, or NULL).
svir_init_mu <- function(spec, info) {
  D <- length(spec$prior_type)
  mu <- numeric(D)
  layout <- info$layout
  X <- spec$X
  p <- ncol(X)
  off <- if (is.null(spec$offset)) rep(0, length(spec$y)) else spec$offset
  codes <- svir_codes$family
  fam <- if (spec$family == codes[["negbin"]]) stats::poisson() else info$family
  yw <- svir_glm_yw(spec)
  y <- yw$y
  w <- yw$w
  se <- rep(NA_real_, p)
  sep <- NULL
  beta <- tryCatch({
    if (spec$family == codes[["gaussian"]]) {
      # Gaussian, identity link: least squares, without glm.fit()'s iterations
      sw <- sqrt(w)
      g <- stats::.lm.fit(X * sw, (y - off) * sw)
      b <- g$coefficients
      R <- g$qr[seq_len(p), seq_len(p), drop = FALSE]
      R[lower.tri(R)] <- 0
      disp <- sum(g$residuals^2) / max(sum(w > 0) - p, 1)
      if (ncol(R) == p && all(is.finite(R)) && all(abs(diag(R)) > 0)) {
        se[g$pivot] <- sqrt(disp * rowSums(backsolve(R, diag(p))^2))
      }
    } else {
      pen <- svir_beta_penalty(spec, p)
      g <- svir_pen_irls(X, y, w, off, fam, pen$prec, pen$mean)
      b <- g$beta
      # Pearson's dispersion, at least 1 (over-dispersed counts widen it)
      r <- (y - g$mu) / sqrt(fam$variance(g$mu))
      disp <- max(1, sum(w * r^2, na.rm = TRUE) / max(length(y) - p, 1))
      V <- tryCatch(chol2inv(chol(g$A / disp + diag(pen$prec, p))), error = function(e) NULL)
      if (!is.null(V)) se <- sqrt(pmax(diag(V), 0))
      sep <- svir_separation(X, y, w, off, fam, spec, b, se, info)
    }
    b[!is.finite(b)] <- 0
    b
  }, error = function(e) rep(0, p))
  mu[seq_len(p)] <- beta
  attr(mu, "glm_se") <- se
  attr(mu, "separation") <- sep
  cls <- layout$class
  mu[cls == "sd"] <- log(0.5)
  if (spec$family == codes[["gaussian"]]) {
    r <- spec$y - off - drop(X %*% beta)
    mu[cls == "sigma"] <- log(max(stats::sd(r), 1e-3))
  }
  if (spec$family == codes[["negbin"]]) {
    m <- mean(spec$y)
    v <- stats::var(spec$y)
    phi <- if (is.finite(v) && v > m) m^2 / (v - m) else 10
    mu[cls == "phi"] <- log(min(max(phi, 0.1), 100))
  }
  if (!is.null(spec$Xz)) {
    nb <- spec$family == codes[["negbin"]]
    zs <- svir_zi_start(spec, beta, off, if (nb) exp(mu[cls == "phi"]),
                        pen = svir_beta_penalty(spec, p))
    mu[seq_len(p)] <- zs$beta
    mu[cls == "zi"] <- zs$gamma
    if (nb) mu[cls == "phi"] <- log(min(max(zs$phi, 0.1), 100))
  }
  mu
}

# Separation: observations that the unpenalised GLM fits exactly at a
# boundary of the mean (a probability of 0 or 1, a rate of 0 with a zero
# count), with the coefficients that the prior pulled back by more than
# four of their posterior standard errors (`b` and `se`, the penalised
# fit's). NULL when the data bound every coefficient. The fixed-effect
# names are the original ones (info$coef_names).
svir_separation <- function(X, y, w, off, fam, spec, b, se, info) {
  # to a tight tolerance: at glm()'s 1e-8 a level with 100 zero counts
  # stops at a rate of about 1e-8, not at the edge
  g <- suppressWarnings(stats::glm.fit(X, y, weights = w, offset = off, family = fam,
                                       control = list(maxit = 100, epsilon = 1e-14)))
  m <- g$fitted.values
  eps <- 1e-8
  edge <- if (fam$family == "binomial") {
    (m < eps & y == 0) | (m > 1 - eps & y == 1)
  } else {
    m < eps & y == 0
  }
  if (!any(edge)) return(NULL)
  bu <- g$coefficients
  far <- is.finite(se) & (!is.finite(bu) | abs(bu - b) > 4 * se)
  far[is.na(far)] <- FALSE
  # the intercept of the centred predictors moves with any separating
  # slope; it is named only when nothing else is
  icpt <- info$coef_names == "(Intercept)"
  if (any(far & !icpt)) far <- far & !icpt
  if (!any(far)) return(NULL)
  list(nobs = sum(edge), coef = info$coef_names[far])
}

# What the fit's summary says about separation (NULL: nothing).
svir_separation_message <- function(sep) {
  if (is.null(sep)) return(NULL)
  msg <- sprintf(paste0("the data separate: without the prior, %d observation%s would be fitted ",
                        "at the edge (a probability of 0 or 1, or a rate of 0), and the estimate%s ",
                        "of %s %s set by the prior, not bounded by the data"),
                 sep$nobs, if (sep$nobs == 1) "" else "s",
                 if (length(sep$coef) == 1) "" else "s", paste(sep$coef, collapse = ", "),
                 if (length(sep$coef) == 1) "is" else "are")
  if (length(sep$marginal)) {
    msg <- paste0(msg, sprintf(paste0(". The posterior of %s (mean, sd, intervals, draws) is ",
                                      "computed on a grid from its exact conditionals, as a ",
                                      "Gaussian cannot follow its long tail"),
                               paste(names(sep$marginal), collapse = ", ")))
  }
  msg
}

# Warnings about what the data cannot tell, before the fit: a response at
# one edge in every observation, and separation. Returns TRUE (invisibly)
# for a response at one edge everywhere, whose warning says all there is
# to say (the separation found then is the intercept's, the same fact).
svir_warn_data <- function(spec, info, separation) {
  codes <- svir_codes$family
  y <- info$y
  edge <- NULL
  if (spec$family %in% codes[c("poisson", "negbin")] && all(y == 0)) edge <- "0"
  if (spec$family == codes[["binomial"]]) {
    tr <- if (is.null(info$trials)) rep(1, length(y)) else info$trials
    if (all(y == 0)) edge <- "a failure"
    if (all(y == tr)) edge <- "a success"
  }
  if (!is.null(edge)) {
    cli::cli_warn(c(
      "The response is {edge} in every observation.",
      i = "The data bound the mean from one side only: the intercept and the random-effect standard deviations are set by their priors (see {.fn prior_summary}).",
      i = "Check the response, or set informative priors with {.fn svi_prior}."),
      class = "svir_warning")
    return(invisible(TRUE))
  }
  if (!is.null(separation)) {
    cli::cli_warn(c(
      "The data separate: {.val {separation$coef}} {?is/are} not bounded by the data.",
      i = "Without the prior, {separation$nobs} observation{?s} would be fitted at the edge (a probability of 0 or 1, or a rate of 0).",
      i = "{cli::qty(length(separation$coef))}The estimate{?s} come{?s/} from the prior: see {.fn prior_summary}, or remove the separating term{?s}."),
      class = "svir_warning")
  }
  invisible(FALSE)
}

# SVI's partial centring of each one-column random-effect term
# (svi_control(centre = ); the engine's u = b / sd^(1 - lambda), see
# back_q1_centred() in src/models/glmm/glmm_svi.c). "auto": for each level
# j the data's share of its precision, rho_j = I_j s^2 / (1 + I_j s^2), with
# I_j the Fisher information of its rows at the GLM start (sum of w_i
# mu'(eta_i)^2 / V(mu_i), over sigma^2 for the Gaussian) and s a moment
# estimate of the term's sd; lambda is the median of rho_j, the weight that
# makes a normal-normal model's posterior of the effect and of the sd
# independent (Papaspiliopoulos, Roberts and Skold 2003). Where another
# factor nests in the term (instructors within departments), a level learns
# its effect only through its children's, each known to within their sd:
# I_j = sum over children 1 / (s_c^2 + 1 / I_c). The moment estimate, from
# the finest term to the coarsest: the GLM's working residuals averaged per
# level with weights I (r_j), s^2 = the weighted variance of r_j less the
# mean of 1 / I_j (and, for a term with a nested child, the child's share
# s_c^2 times the mean over levels of sum_c I_c'^2 / (sum_c I_c')^2), at
# least 1e-4. Terms with more than one column get 0. Returns a numeric
# vector, one per term.
svir_centring <- function(spec, info, setting, mom = NULL) {
  # "learn": the rule's lambda, within [0.01, 0.99], starts the engine's
  # learning (learn_centring() in src/models/glmm/glmm_svi.c)
  learn <- identical(setting, "learn")
  nt <- length(spec$terms)
  q <- vapply(spec$terms, function(tm) ncol(tm$Z), 1L)
  lam <- numeric(nt)
  if (identical(setting, "none") || !nt) return(lam)
  if (is.numeric(setting)) {
    lam[] <- setting
    return(lam)
  }
  if (is.null(mom)) mom <- svir_term_moments(spec, info)
  for (t in which(q > 1L)) {
    # a term with several columns: the median over levels and columns of
    # I_jk s_k^2 / (1 + I_jk s_k^2), each column's information and moment
    # estimate taken alone (svir_column_moments); in a nested pair, 0
    if (any(mom$nests[t, ]) || any(mom$nests[, t])) next
    rho <- svir_column_moments(spec$terms[[t]], mom, t)
    lam[t] <- stats::median(rho)
    if (learn) lam[t] <- min(max(lam[t], 0.01), 0.99)
  }
  for (t in which(q == 1L)) {
    # a term in a nested pair stays non-centred: a level's effect trades off
    # against its children's mean, which the guide's independent groups do
    # not follow; every InstEval term centred gave sd(dept) 0.027 and 0.061
    # over two seeds against 0.055 and 0.058 non-centred and lmer's 0.083
    # (bench/centre.R)
    if (!is.null(mom$child[[t]]) || any(mom$nests[t, ])) next
    Ij <- mom$lv[[t]]$I
    lam[t] <- stats::median(Ij * mom$s2[t] / (1 + Ij * mom$s2[t]))
    if (learn) lam[t] <- min(max(lam[t], 0.01), 0.99)
  }
  round(lam, 3)
}

# The data's view of each one-column term at the GLM start, for the
# centring rule (svir_centring) and the locals' start (svir_local_start):
# the working weights W (the Fisher information per row) and residuals r,
# per level I_j = sum W z^2 and the weighted mean residual r_j = sum W z r /
# I_j (z the term's column of Z), the moment estimate s2 of each term's sd^2
# (NA for terms with more than one column), each term's nested child and the
# nesting matrix (svir_nesting).
svir_term_moments <- function(spec, info) {
  nt <- length(spec$terms)
  q <- vapply(spec$terms, function(tm) ncol(tm$Z), 1L)
  codes <- svir_codes$family
  cls <- info$layout$class
  p <- ncol(spec$X)
  beta <- spec$init_mu[seq_len(p)]
  eta <- drop(spec$X %*% beta) + if (is.null(spec$offset)) 0 else spec$offset
  fam <- if (spec$family == codes[["negbin"]]) stats::poisson() else info$family
  yw <- svir_glm_yw(spec)
  wk <- svir_working(fam, yw$y, yw$w, eta)
  info_i <- unname(wk$W)
  r <- unname(wk$r) # the working residual on the link scale
  if (spec$family == codes[["gaussian"]]) {
    info_i <- info_i / exp(2 * spec$init_mu[cls == "sigma"])
  } else if (spec$family == codes[["negbin"]]) {
    info_i <- info_i / (1 + wk$mu / exp(spec$init_mu[cls == "phi"]))
  }
  J <- vapply(spec$terms, function(tm) as.double(tm$ngroups), 1)
  nests <- if (nt > 1L) svir_nesting(spec) else matrix(FALSE, 1, 1)
  zcol <- lapply(spec$terms, function(tm) if (ncol(tm$Z) == 1L) unname(tm$Z[, 1L]))
  # per level: the information and the weighted mean working residual
  lv <- lapply(seq_len(nt), function(t) {
    if (q[t] == 1L) svir_level_moments(info_i, r, zcol[[t]], spec$terms[[t]]$group, J[t])
  })
  # each term's nested child (its coarsest) and the child's parent map
  child <- lapply(seq_len(nt), function(t) {
    kids <- which(nests[, t] & q == 1L)
    if (!length(kids)) return(NULL)
    c1 <- kids[which.min(J[kids])]
    par <- rep(NA_integer_, J[c1])
    par[spec$terms[[c1]]$group + 1L] <- spec$terms[[t]]$group
    list(c = c1, par = par)
  })
  s2 <- rep(NA_real_, nt)
  for (t in order(-J)) {
    if (q[t] != 1L) next
    L <- lv[[t]]
    ok <- L$I > 0
    v <- svir_moment_var(L)
    ch <- child[[t]]
    if (!is.null(ch) && is.finite(s2[ch$c])) {
      Ic <- lv[[ch$c]]$I
      okc <- !is.na(ch$par)
      num <- svir_gsum(Ic[okc]^2, ch$par[okc], J[t])
      den <- svir_gsum(Ic[okc], ch$par[okc], J[t])^2
      v <- v - s2[ch$c] * mean((num / den)[ok], na.rm = TRUE)
    }
    s2[t] <- max(v, 1e-4)
  }
  list(W = info_i, r = r, z = zcol, lv = lv, s2 = s2, child = child, nests = nests, q = q, J = J)
}

# Per level of a term's column z (group index g, J levels): the
# information I_j = sum W z^2 and the weighted mean working residual r_j =
# sum W z r / I_j.
svir_level_moments <- function(W, r, z, g, J) {
  Ij <- svir_gsum(W * z^2, g, J)
  list(I = Ij, r = svir_gsum(W * z * r, g, J) / pmax(Ij, 1e-12))
}

# The moment estimate of a column's variance from its levels with data
# (svir_level_moments): the I-weighted variance of r_j less the mean of 1 /
# I_j (not yet bounded below).
svir_moment_var <- function(L) {
  ok <- L$I > 0
  wj <- L$I[ok]
  rbar <- sum(wj * L$r[ok]) / sum(wj)
  sum(wj * (L$r[ok] - rbar)^2) / sum(wj) - mean(1 / wj)
}

# A term with several columns, for the centring rule: each column taken
# alone (svir_level_moments), its moment estimate s_k^2 (at least 1e-4).
# Returns the shares I_jk s_k^2 / (1 + I_jk s_k^2) of the levels with data.
svir_column_moments <- function(tm, mom, t) {
  unlist(lapply(seq_len(ncol(tm$Z)), function(k) {
    L <- svir_level_moments(mom$W, mom$r, unname(tm$Z[, k]), tm$group, mom$J[t])
    wj <- L$I[L$I > 0]
    if (!length(wj)) return(numeric(0))
    s2 <- max(svir_moment_var(L), 1e-4)
    wj * s2 / (1 + wj * s2)
  }))
}

# Sums of x per level of a 0-based group index g with Jt levels (levels
# without rows: 0).
svir_gsum <- function(x, g, Jt) {
  s <- rowsum(x, g, reorder = TRUE)
  out <- numeric(Jt)
  out[as.integer(rownames(s)) + 1L] <- s[, 1L]
  out
}
