# The posterior of a coefficient the data do not bound (separation,
# R/start.R), on a grid.
#
# Under separation the likelihood of a coefficient is a one-sided wall:
# flat towards infinity, where the prior alone brings the posterior down.
# Its posterior is skewed with a long tail that a Gaussian guide cannot
# follow: fitted by KL(q || p), q sits at the wall with a fraction of the
# posterior's spread (quasi-separation, bench/README.md: sd 0.42 against
# NUTS's 2.12). The fit keeps q for everything else and replaces the
# separated coefficient's marginal by a mixture of its exact conditionals,
#   p(b_k | y) ~= mean_s p(b_k | b_-k^(s), u^(s), y),
# over draws s of the other fixed effects, the other globals and the random
# effects u from the guide, in the units of the data (the other raw-unit
# coefficients held; the prior of every internal coordinate that moves with
# b_k counted). This is exact when q's marginal of the others is their
# posterior marginal, whatever their correlation with b_k (the law of total
# variance), which is where separation leaves q right: the wall bounds the
# others, not b_k. Each conditional is one-dimensional: its log density on
# a coarse grid uniform in asinh((b_k - m) / s) (m, s: the guide's mean
# and sd; fine near the guide, coarse in a long tail), widened until both
# ends are 1e-10 below its peak, interpolated to a fine one, normalised.
# The fixed effects' mean and covariance (fixef, vcov, summary, confint)
# and the draws (draws of b_k from their conditionals) come from the
# mixture.

# log prior of internal coordinates x (one row per coordinate in `j` of
# the spec's arrays, one column per point), up to constants
svir_sep_logprior <- function(spec, j, x) {
  codes <- svir_codes$prior
  out <- 0
  for (r in seq_along(j)) {
    k <- j[r]
    z <- (x[r, ] - spec$prior_loc[k]) / spec$prior_scale[k]
    type <- spec$prior_type[k]
    out <- out + if (type == codes[["normal"]]) -0.5 * z^2 else
      if (type == codes[["student_t"]]) stats::dt(z, spec$prior_df[k], log = TRUE) else 0
  }
  out
}

# The marginal posterior of coefficient `k` (a name) of `fit` on a grid,
# given E, draws of the linear predictor for the stored draws `sel`.
# Returns the grid, the mixture density, mean, sd, the conditional means
# (one per draw) and draws of b_k, one from the conditional of draw sel[j]
# for each j in `pos`; NULL when a conditional is not finite or not
# bounded on the grid.
svir_sep_marginal <- function(fit, spec, k, sel, E, pos = seq_along(sel)) {
  fam <- fit$family_name
  X <- fit$X
  xk <- X[, k]
  rows <- which(xk != 0)
  xr <- xk[rows]
  B <- fit$draws[sel, colnames(X), drop = FALSE]
  bk <- B[, k]
  S <- length(sel)
  # eta without b_k's part, on the rows b_k moves
  Eo <- E[rows, , drop = FALSE] - outer(xr, bk)
  y <- as.double(fit$y[rows])
  trials <- if (is.null(fit$trials)) NULL else as.double(fit$trials[rows])
  w <- if (is.null(spec$weights)) rep(1, length(rows)) else as.double(spec$weights[rows])
  phi <- if (fam == "negbin") as.double(fit$draws[sel, "phi"]) else NULL
  etaz <- if (is.null(fit$zi)) NULL else
    svir_zi_eta_draws(fit, fit$zi_info$X[rows, , drop = FALSE], sel)
  # the internal coordinates: beta_int = T^-1 (beta_raw - shift), linear in
  # b_k; those that move with it carry their priors
  Tinv <- solve(fit$beta_map$T)
  base <- Tinv %*% (t(B) - fit$beta_map$shift) # p x S
  dk <- Tinv[, match(k, colnames(X))]
  mv <- which(abs(dk) > 1e-12 * max(abs(dk)))
  pidx <- fit$index$beta[mv]
  # log conditionals at points g, for draws s: length(g) x length(s),
  # less each column's maximum; the likelihood's sums in C (glue/r_sep.c,
  # the GLMM's own log-likelihood: its family, link and zero inflation)
  logc <- function(g, s) {
    L <- .Call(C_svir_sep_grid_r, Eo[, s, drop = FALSE], as.double(xr), y, trials, w,
               spec$family, spec$link, phi[s], if (is.null(etaz)) NULL else etaz[, s, drop = FALSE],
               as.double(g), 0L)
    for (j in seq_along(g)) {
      xin <- base[mv, s, drop = FALSE] + outer(dk[mv], g[j] - bk[s])
      L[j, ] <- L[j, ] + svir_sep_logprior(spec, pidx, xin)
    }
    L - rep(apply(L, 2L, max), each = length(g))
  }
  # the grid is uniform in u, b_k = m0 + s0 sinh(u) (m0, s0: the guide's
  # mean and sd): spacing 0.2 s0 near the guide, growing into the tails,
  # so that a Student-t prior's polynomial tail (hundreds of s0 long) and
  # the peak are both resolved. The range: u in [-4, 4], widened by 1 at
  # an end (on 61 points and up to 100 draws) until every conditional is
  # 1e-10 of its peak there; then all draws (widened again if need be).
  m0 <- fit$fixef$mean[[k]]
  s0 <- sqrt(fit$fixef$vcov[k, k])
  if (!is.finite(s0) || s0 <= 0) s0 <- 0.1 * (1 + abs(m0))
  gmap <- function(u) m0 + s0 * sinh(u)
  ulo <- -4
  uhi <- 4
  sub <- unique(round(seq(1, S, length.out = min(S, 100L))))
  ok <- FALSE
  final <- FALSE
  for (it in 1:60) {
    final <- it > 1 && ok
    ng <- max(61L, as.integer(ceiling((uhi - ulo) / 0.2)) + 1L)
    u <- seq(ulo, uhi, length.out = ng)
    L <- logc(gmap(u), if (final) seq_len(S) else sub)
    if (!all(is.finite(L))) return(NULL)
    w_lo <- any(L[1, ] > -23)
    w_hi <- any(L[ng, ] > -23)
    if (!w_lo && !w_hi) {
      if (final) break
      ok <- TRUE
      next
    }
    ok <- FALSE
    if (w_lo) ulo <- ulo - 1
    if (w_hi) uhi <- uhi + 1
  }
  if (w_lo || w_hi || !final) return(NULL)
  # a fine grid: the log conditionals interpolated linearly in u (at the
  # coarse spacing of 0.2 s0 near the guide the error is under 0.005 nats
  # where the density is; a spline would overshoot at the wall, where a log
  # density falls by thousands between two points); each point's weight in
  # an integral over b_k is db_k/du du
  uf <- seq(ulo, uhi, length.out = 2001L)
  du <- uf[2] - uf[1]
  gf <- gmap(uf)
  wf <- s0 * cosh(uf) * du
  Smap <- vapply(seq_along(u), function(j) {
    e <- numeric(length(u))
    e[j] <- 1
    stats::approx(u, e, xout = uf)$y
  }, numeric(length(uf)))
  Lf <- Smap %*% L
  Pf <- exp(Lf - rep(apply(Lf, 2L, max), each = length(uf)))
  Pf <- Pf / rep(colSums(Pf * wf), each = length(uf))
  dens <- rowMeans(Pf)
  cmean <- colSums(Pf * (gf * wf))
  mu <- sum(dens * gf * wf)
  sdv <- sqrt(max(sum(dens * (gf - mu)^2 * wf), 0))
  # draws of b_k from the conditionals (inverse CDF; uniform in u within a
  # cell)
  cdf <- apply(Pf * wf, 2L, cumsum)
  v <- stats::runif(length(pos)) * cdf[length(uf), pos]
  idx <- vapply(seq_along(pos), function(r) findInterval(v[r], cdf[, pos[r]]), 0L)
  draw <- gmap(uf[pmin(idx + 1L, length(uf))] - du * stats::runif(length(pos)))
  list(coef = k, grid = gf, weight = wf, density = dens, mean = mu, sd = sdv,
       cond_mean = cmean, draws = draw)
}

# The separated coefficients' marginals (svir_sep_marginal), put into the
# fit: fixef mean and vcov, and the draws. Families binomial, poisson and
# negbin (any link), with or without zero inflation. The random effects are
# drawn with a seed from the fit's, and R's stream is put back.
svir_separation_refit <- function(fit, spec) {
  sep <- fit$separation
  if (is.null(sep) || !fit$family_name %in% c("binomial", "poisson", "negbin")) return(fit)
  coefs <- intersect(sep$coef, colnames(fit$X))
  if (!length(coefs)) return(fit)
  rng <- svir_sim_seed(if (is.null(fit$seed)) 1L else as.integer(fit$seed %% .Machine$integer.max))
  on.exit(assign(".Random.seed", rng$old, envir = .GlobalEnv), add = TRUE)
  nd <- nrow(fit$draws)
  # all draws when the rows are few; else a subset, recycled over the draws
  # (about 2e7 evaluations of the likelihood on the final grid of at least
  # 61 points)
  nr <- max(vapply(coefs, function(k) sum(fit$X[, k] != 0), 0))
  S <- max(50L, min(nd, floor(2e7 / (61 * max(nr, 1)))))
  sel <- if (S >= nd) seq_len(nd) else sort(sample.int(nd, S))
  # the draws' rows: sel, then (when sel is a subset) sel's rows again, each
  # with a new draw of b_k from its conditional
  pos <- if (length(sel) == nd) seq_len(nd) else
    c(seq_along(sel), sample.int(length(sel), nd - length(sel), TRUE))
  rows <- sel[pos]
  E <- svir_eta_draws(fit, svir_design(fit), sel)
  out <- list()
  for (k in coefs) {
    mg <- tryCatch(svir_sep_marginal(fit, spec, k, sel, E, pos), error = function(e) NULL)
    if (is.null(mg)) {
      cli::cli_warn(c("The posterior of {.val {k}} could not be computed on a grid.",
                      i = "Its summaries are the Gaussian guide's, which is too narrow for a coefficient the data do not bound."),
                    class = "svir_warning")
      next
    }
    out[[k]] <- mg
  }
  if (!length(out)) return(fit)
  draws <- fit$draws[rows, , drop = FALSE]
  V <- fit$fixef$vcov
  B <- fit$draws[sel, colnames(fit$X), drop = FALSE]
  for (k in names(out)) {
    mg <- out[[k]]
    draws[, k] <- mg$draws
    fit$fixef$mean[[k]] <- mg$mean
    # Cov(b_k, b_j) = Cov(E[b_k | others], b_j) over the draws
    cv <- drop(crossprod(B - rep(colMeans(B), each = nrow(B)), mg$cond_mean - mean(mg$cond_mean))) /
      (nrow(B) - 1)
    cv[k] <- mg$sd^2
    V[k, ] <- cv
    V[, k] <- cv
    mg$cond_mean <- NULL
    mg$draws <- NULL
    out[[k]] <- mg
  }
  rownames(draws) <- NULL
  fit$draws <- draws
  # the engine's draws (internal units) in the same rows, their fixed
  # effects from the new raw-unit ones
  th <- fit$engine$draws[rows, , drop = FALSE]
  th[, fit$index$beta] <- t(solve(fit$beta_map$T, t(draws[, colnames(fit$X), drop = FALSE]) -
                                  fit$beta_map$shift))
  fit$engine$draws <- th
  fit$fixef$vcov <- V
  fit$separation$marginal <- out
  fit
}

# Quantiles of a grid marginal (its points' weights: the integral's).
svir_sep_quantile <- function(mg, probs) {
  cs <- cumsum(mg$density * mg$weight)
  cs <- cs / cs[length(cs)]
  stats::approx(c(0, cs), c(mg$grid[1], mg$grid), xout = probs, ties = "ordered")$y
}
