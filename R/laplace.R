# method = "laplace": the random effects and fixed effects by a Laplace step
# given the variance parameters, and the whole posterior by importance
# sampling with Pareto smoothing (src/models/glmm/glmm_laplace.c,
# src/glue/r_laplace.c; dev/CALIBRATION.md says why and what it gives).
#
# theta_h: the variance parameters in the engine's internal units (log sds,
# canonical partial correlations, log sigma, log phi); u = (beta, b).
#  1. The Laplace marginal log p~(theta_h | y) (Newton to the conditional
#     mode of u, Gaussian at the mode) is maximised by BFGS; its Hessian,
#     by differences, gives the proposal's scale.
#  2. S draws: theta_h from a multivariate t around the mode, u from the
#     Laplace Gaussian given each theta_h; the log ratio log p(y, theta, z)
#     - log g(theta_h) - log q(z | theta_h) is exact, so Pareto-smoothed
#     self-normalised weights give the posterior, and k-hat says whether
#     they can be trusted (jointly over globals and random effects).
#  3. If k-hat is above 0.5, the proposal moves to the weighted moments of
#     theta_h (wider by 20%) and draws again, at most twice; the round with
#     the smallest k-hat is kept.

# The central difference gradient of f at x.
svir_num_grad <- function(f, x, h = 1e-4) {
  vapply(seq_along(x), function(k) {
    e <- replace(numeric(length(x)), k, h)
    (f(x + e) - f(x - e)) / (2 * h)
  }, 0)
}

# Pareto-smoothed log weights (Vehtari et al.): the M largest ratios are
# replaced by the quantiles of the generalized Pareto that
# svir_psis_khat() fitted to them, capped at the largest ratio. Returns
# list(lw = normalised log weights, khat).
svir_psis_smooth <- function(log_ratio) {
  lr <- as.double(log_ratio)
  lr[!is.finite(lr)] <- -Inf
  lr <- lr - max(lr)
  khat <- svir_psis_khat(lr)
  k <- as.double(khat)
  sigma <- attr(khat, "sigma")
  M <- attr(khat, "tail_length")
  if (is.finite(k) && !is.null(sigma) && is.finite(sigma) && sigma > 0) {
    o <- order(lr)
    S <- length(lr)
    tail <- o[(S - M + 1L):S]
    if (!is.finite(lr[o[S - M]])) return(list(lw = lr - log(sum(exp(lr))), khat = khat))
    pr <- (seq_len(M) - 0.5) / M
    q <- if (abs(k) < 1e-8) -sigma * log1p(-pr) else sigma * expm1(-k * log1p(-pr)) / k
    lr[tail] <- pmin(log(exp(lr[o[S - M]]) + q), 0)
  }
  lw <- lr - (max(lr) + log(sum(exp(lr - max(lr)))))
  list(lw = lw, khat = khat)
}

# Weighted mean and covariance of the rows of x.
svir_wmoments <- function(x, w) {
  x <- as.matrix(x)
  mu <- colSums(x * w)
  xc <- sweep(x, 2L, mu)
  list(mean = mu, cov = crossprod(xc * sqrt(w)))
}

# A symmetric matrix made positive definite (eigenvalues at least eps times
# the largest).
svir_pd <- function(H, eps = 1e-8) {
  H <- (H + t(H)) / 2
  e <- eigen(H, symmetric = TRUE)
  v <- pmax(e$values, eps * max(abs(e$values), 1))
  e$vectors %*% (v * t(e$vectors))
}

# Systematic resampling of n indices with probabilities w (seeded through
# R's generator by svir_sim_seed-style handling in the caller).
svir_resample <- function(w, n, u0) {
  cw <- pmin(cumsum(w), 1)
  cw[length(cw)] <- 1
  pos <- (u0 + seq_len(n) - 1) / n
  findInterval(pos, cw) + 1L
}

# The whole method: returns an engine list (as the C engine's) for
# svir_postprocess(), with the draws, their weights and the diagnostics.
svir_laplace_run <- function(job) {
  t_start <- proc.time()[["elapsed"]]
  spec <- job$spec
  # a term with one observation per level is integrated out per observation
  # by quadrature (glmm_laplace.c); FALSE keeps it in the Newton system
  spec$lap_integrate <- isTRUE(getOption("svir.laplace_quadrature", TRUE))
  ctrl <- job$ctrl
  p <- ncol(spec$X)
  D <- length(spec$prior_type)
  nz <- sum(vapply(spec$terms, function(tm) as.double(tm$ngroups) * NCOL(tm$Z), 0))
  h <- if (D > p) seq.int(p + 1L, D) else integer()
  th0 <- as.double(spec$init_mu)
  u <- c(th0[seq_len(p)], rep(0, nz))
  threads <- as.integer(ctrl$threads)
  nevals <- 0L
  integrated <- 0L
  negf <- function(x) {
    th <- th0
    th[h] <- x
    r <- .Call(C_svir_lap_mode_r, spec, th, u)
    nevals <<- nevals + 1L
    integrated <<- r$integrated
    if (!isTRUE(r$ok) || !is.finite(r$logp)) return(Inf)
    u <<- r$u
    -r$logp
  }
  # 1. the Laplace marginal's mode and curvature
  opt <- NULL
  if (length(h)) {
    gr <- function(x) svir_num_grad(negf, x)
    opt <- stats::optim(th0[h], negf, gr, method = "BFGS",
                        control = list(maxit = 500L, reltol = 1e-12))
    if (!is.finite(opt$value)) {
      cli::cli_abort(c("The Laplace step found no finite posterior mode of the variance parameters.",
                       i = "Try {.code method = \"svi\"}, or check the model and the priors."),
                     class = "svir_error", call = NULL)
    }
    Hs <- stats::optimHess(opt$par, negf, gr)
    Sig <- solve(svir_pd(Hs))
    mode_h <- opt$par
  } else {
    Sig <- matrix(0, 0, 0)
    mode_h <- numeric()
  }
  th_mode <- th0
  th_mode[h] <- mode_h
  negf(mode_h)
  u_mode <- u
  logp_mode <- if (length(h)) -opt$value else NA_real_
  # 2.-3. importance sampling, the proposal adapted at most twice
  S <- as.integer(if (!is.null(ctrl$is_draws)) ctrl$is_draws else 4000L)
  nu <- 5L
  seed <- as.double(ctrl$seed)
  centre <- mode_h
  scale <- Sig
  rounds <- list()
  res <- list()
  first <- 0
  sample_is <- function(centre, scale, n) {
    Lp <- if (length(h)) t(chol(svir_pd(scale))) else matrix(0, 0, 0)
    th_c <- th_mode
    th_c[h] <- centre
    r <- .Call(C_svir_lap_is_r, spec, th_c, u_mode, Lp, nu, as.integer(n), first, seed, threads)
    first <<- first + n
    r
  }
  weigh <- function(r) {
    sj <- svir_psis_smooth(r$logw)
    sm <- svir_psis_smooth(r$logw_marginal)
    list(r = r, wj = exp(sj$lw), wm = exp(sm$lw), kj = as.double(sj$khat), km = as.double(sm$khat))
  }
  ok_k <- function(k, at) is.finite(k) && k <= at
  for (round in 1:3) {
    # a quarter of the draws first: enough to tell whether the joint
    # weights will do, and all the Laplace marginal needs if they will not
    # (later rounds after hopeless joint weights serve the marginal alone)
    S1 <- if (round == 1L || !ok_k(x$kj, 0.7)) max(100L, S %/% 4L) else S
    x <- weigh(sample_is(centre, scale, S1))
    if (S1 < S && ok_k(x$kj, 0.7)) {
      r2 <- sample_is(centre, scale, S - S1)
      x <- weigh(list(theta = cbind(x$r$theta, r2$theta), z = cbind(x$r$z, r2$z),
                      logw = c(x$r$logw, r2$logw), logw_marginal = c(x$r$logw_marginal, r2$logw_marginal),
                      ok = c(x$r$ok, r2$ok)))
    }
    res[[round]] <- x
    rounds[[round]] <- data.frame(round = round, draws = length(x$r$logw), khat = x$kj,
                                  ess = 1 / sum(x$wj^2), khat_marginal = x$km,
                                  ess_marginal = 1 / sum(x$wm^2))
    # done: no variance parameters, usable joint weights, or joint weights
    # beyond repair (k-hat above 0.7 with the proposal at the Laplace
    # marginal's mode) while the marginal's are good
    if (!length(h) || ok_k(x$kj, 0.5) || (!ok_k(x$kj, 0.7) && ok_k(x$km, 0.5))) break
    # the next proposal: the weighted moments of theta_h, 20% wider, from the
    # joint weights when they are usable, else from the Laplace marginal's
    wa <- if (ok_k(x$kj, 0.7)) x$wj else x$wm
    mm <- svir_wmoments(t(x$r$theta[h, , drop = FALSE]), wa)
    centre <- mm$mean
    scale <- mm$cov * 1.2^2
  }
  kj <- vapply(res, function(x) if (is.finite(x$kj)) x$kj else Inf, 0)
  km <- vapply(res, function(x) if (is.finite(x$km)) x$km else Inf, 0)
  if (min(kj) <= 0.7) {
    # the joint weights: exact up to the importance sampler's error
    bi <- which.min(kj)
    weighting <- "joint"
    w <- res[[bi]]$wj
  } else {
    # the joint weights are unusable (many random effects with skewed
    # conditionals): the variance parameters are weighted by their Laplace
    # marginal, and u given them is the Laplace Gaussian (INLA's Gaussian
    # strategy, integrated by importance sampling)
    bi <- which.min(km)
    weighting <- "marginal"
    w <- res[[bi]]$wm
  }
  r <- res[[bi]]$r
  best <- list(khat = kj[bi], khat_marginal = km[bi], round = bi)
  # the posterior: weighted moments, and equally weighted draws by resampling
  nd <- as.integer(if (!is.null(job$control$ndraws)) job$control$ndraws else 1000L)
  rng <- svir_sim_seed(seed %% 2147483647)
  if (!is.null(rng$old)) on.exit(assign(".Random.seed", rng$old, envir = .GlobalEnv), add = TRUE)
  sel <- svir_resample(w, nd, stats::runif(1))
  sel <- sel[sample.int(nd)]
  theta_all <- t(r$theta)
  mm <- svir_wmoments(theta_all, w)
  L <- t(chol(svir_pd(mm$cov, 1e-12)))
  zdraws <- t(r$z[, sel, drop = FALSE])
  # the random effects' means and sds in z, in the layout of a guide's
  # blocks (postprocess reads them; the fit's summaries of the random
  # effects come from the draws, svir_laplace_finish())
  m_list <- list()
  C_list <- list()
  off <- 0
  for (t in seq_along(spec$terms)) {
    tm <- spec$terms[[t]]
    q <- NCOL(tm$Z)
    J <- tm$ngroups
    zt <- r$z[off + seq_len(J * q), , drop = FALSE]
    mz <- drop(zt %*% w)
    sz <- sqrt(pmax(drop(zt^2 %*% w) - mz^2, 1e-300))
    Cp <- matrix(0, J, q * (q + 1L) / 2L)
    Cp[, cumsum(seq_len(q))] <- log(matrix(sz, J, q, byrow = TRUE))
    m_list[[t]] <- matrix(mz, J, q, byrow = TRUE)
    C_list[[t]] <- Cp
    off <- off + J * q
  }
  lw_raw <- r$logw
  fin <- is.finite(lw_raw)
  logml <- if (any(fin)) max(lw_raw[fin]) + log(sum(exp(lw_raw[fin] - max(lw_raw[fin])))) - log(length(lw_raw)) else NA_real_
  elapsed <- proc.time()[["elapsed"]] - t_start
  list(
    mu = mm$mean, L = L, omega = NULL,
    draws = theta_all[sel, , drop = FALSE],
    m = m_list, C = C_list, z_draws = zdraws,
    elbo = if (length(h)) -opt$value else numeric(),
    steps = if (length(h)) as.integer(opt$counts[["function"]]) else 0L,
    stop_reason = if (is.null(opt) || opt$convergence == 0L) "converged" else "max_steps",
    n_rejected = 0L,
    time = elapsed,
    time_split = NULL,
    backend = "cpu",
    backend_reason = "the Laplace importance sampler runs on the CPU",
    log_ratio = lw_raw,
    laplace = list(
      mode = th_mode, mode_logp = logp_mode, proposal_scale = Sig, nu = nu,
      S = length(r$logw), draws_total = first,
      khat = best$khat, khat_marginal = best$khat_marginal, weighting = weighting,
      ess = 1 / sum(w^2), rounds = do.call(rbind, rounds), round = best$round,
      n_failed = sum(!r$ok), logml = logml, evals = nevals, weights_smoothed = w,
      integrated = integrated)
  )
}

# What method = "laplace" cannot take, refused before any work.
svir_check_laplace <- function(spec, control, backend, call) {
  why <- svir_laplace_refusal(spec, control, backend)
  if (!is.null(why)) {
    cli::cli_abort(c("{.code method = \"laplace\"} cannot fit this model.", x = why,
                     i = "Use {.code method = \"svi\"}."),
                   class = "svir_error", call = call)
  }
  invisible(NULL)
}

svir_laplace_refusal <- function(spec, control, backend) {
  if (!is.null(spec$Xz)) return("It has zero inflation, which the Laplace step does not take yet.")
  if (!is.null(control$batch_size)) return("It uses every observation: {.arg batch_size} must be NULL.")
  if (identical(backend, "cuda")) return("It runs on the CPU: {.arg backend} must be \"auto\" or \"cpu\".")
  NULL
}

# The Laplace sampler's work (flops, roughly) per Newton step and the
# memory (doubles) of one draw's random effects: a step costs a pass over
# the observations with the Hessian's rank-one updates (n k^2, plus about
# 30 n for the family's exp and log), the Schur complement (sum over the
# eliminated term's levels of len_j^2 q) and the rest's Cholesky (nr^3 / 3).
svir_laplace_cost <- function(spec) {
  n <- length(spec$y)
  p <- ncol(spec$X)
  tms <- spec$terms
  # a term integrated out per observation leaves the Newton system and
  # costs its quadrature instead: 15 nodes and the conditional mode's
  # Newton steps, priced as 60 evaluations of the family's log-likelihood
  # (30 flops each) per observation so that the time per unit of cost
  # matches the model without the quadrature (grouseticks: 1.54 ms per
  # draw at a cost of 8.6e5 per step, against 3.89 ms at 2.2e6 without)
  O <- svir_lap_integrated_term(spec)
  quad <- 0
  if (O > 0L) {
    tms <- tms[-O]
    quad <- 60 * 30 * n
  }
  if (!length(tms)) return(c(step = n * (p^2 + 30) + p^3 / 3 + quad, mem = 0))
  size <- vapply(tms, function(tm) as.double(tm$ngroups) * NCOL(tm$Z), 0)
  E <- which.max(size)
  qE <- NCOL(tms[[E]]$Z)
  k <- p + sum(vapply(tms, function(tm) NCOL(tm$Z), 0))
  nr <- p + sum(size[-E])
  # each level of E touches beta and the other terms' levels its rows meet
  len <- rep(p, tms[[E]]$ngroups)
  gE <- as.double(tms[[E]]$group)
  for (t in setdiff(seq_along(tms), E)) {
    # the distinct (level of E, level of t) pairs, keyed as one number
    # (unique() of a two-column data frame took 0.15 s on InstEval)
    key <- gE * tms[[t]]$ngroups + tms[[t]]$group
    first <- !duplicated(key)
    len <- len + NCOL(tms[[t]]$Z) * tabulate(tms[[E]]$group[first] + 1L, tms[[E]]$ngroups)
  }
  c(step = n * (k^2 + 30) + sum(len^2) * qE + nr^3 / 3 + quad, mem = sum(size))
}

# The term that method "laplace" integrates out per observation by
# quadrature (its index, 0 for none): svir_lap_pick_integrated() in
# src/models/glmm/glmm_laplace.c decides.
svir_lap_integrated_term <- function(spec) .Call(C_svir_lap_integrated_r, spec)

# The default method (method = "auto"): the Laplace sampler where it can
# run and its work fits the budget (svir.laplace_max_flops, 2e10: about a
# second or a few on two cores), SVI otherwise. The search for the mode
# takes about 250 Newton steps, a draw about 5; the draws are is_draws at
# most, fewer (not under 200) where the budget needs it. Returns the
# method, why, and the draws.
svir_auto_method <- function(spec, control, be, guide_given, separation, edge = FALSE) {
  svi <- function(why) list(method = "svi", reason = why, is_draws = NULL)
  if (guide_given) return(svi("a guide was given"))
  if (isTRUE(control$keep_path > 0)) return(svi("keep_path asks for the optimiser's path"))
  why <- svir_laplace_refusal(spec, control, be$backend)
  if (!is.null(why)) return(svi(sprintf("the Laplace sampler cannot: %s", why)))
  if (!is.null(separation)) {
    return(svi("the data separate: SVI with the separated coefficients' grid posterior"))
  }
  # every response at one edge: the posterior is the prior's one-sided tail,
  # which the Laplace proposal cannot cover (k-hat above 1)
  if (edge) return(svi("every response is at one edge (all zeros, or all successes)"))
  cost <- svir_laplace_cost(spec)
  budget <- getOption("svir.laplace_max_flops", svir_laplace_max_flops)
  S_max <- if (is.null(control$is_draws)) 4000L else control$is_draws
  S <- min(S_max, floor((budget - 250 * cost[["step"]]) / (5 * cost[["step"]])))
  too_big <- S < min(200L, S_max) || min(S_max, 200L) * cost[["mem"]] > 2.5e7
  if (too_big) {
    return(svi(sprintf("the model is too large for the Laplace sampler (about %.1e flops)",
                       250 * cost[["step"]] + 5 * min(S_max, 200L) * cost[["step"]])))
  }
  S <- as.integer(min(S, floor(2.5e7 / max(cost[["mem"]], 1))))
  list(method = "laplace", is_draws = S,
       reason = sprintf(paste0("small enough for the Laplace sampler (importance-weighted, close ",
                               "to exact; %d draws)"), S))
}

svir_laplace_max_flops <- 2e10

# The draws of term t's random effects (raw units) that go with the kept
# global draws: a list of q matrices (draws x levels), one per column.
svir_laplace_b_draws <- function(fit, t) {
  r <- fit$re[[t]]
  q <- length(r$cnms)
  J <- length(r$levels)
  A <- svir_re_A(fit$engine$draws, fit$index, t, r, fit$scaling$y_scale) # S x q x q
  off <- sum(vapply(fit$re[seq_len(t - 1L)], function(rr) length(rr$levels) * length(rr$cnms), 0))
  Z <- fit$engine$z_draws[, off + seq_len(J * q), drop = FALSE]
  lapply(seq_len(q), function(a) {
    ba <- 0
    for (c in seq_len(q)) ba <- ba + A[, a, c] * Z[, (seq_len(J) - 1L) * q + c, drop = FALSE]
    ba
  })
}

# The posterior covariance of each level's random effects of term t: q x q x J.
svir_laplace_b_cov <- function(fit, t) {
  bd <- svir_laplace_b_draws(fit, t)
  q <- length(bd)
  J <- ncol(bd[[1]])
  cv <- array(0, c(q, q, J))
  for (a in seq_len(q)) for (c in seq_len(a)) {
    v <- colMeans(bd[[a]] * bd[[c]]) - colMeans(bd[[a]]) * colMeans(bd[[c]])
    v <- v * nrow(bd[[a]]) / (nrow(bd[[a]]) - 1)
    cv[a, c, ] <- v
    cv[c, a, ] <- v
  }
  cv
}

# The svi_fit object of a Laplace fit: the random effects' summaries from
# the draws.
svir_laplace_finish <- function(fit, engine) {
  fit$laplace <- engine$laplace
  lp <- fit$laplace
  k_used <- if (identical(lp$weighting, "marginal")) lp$khat_marginal else lp$khat
  if (!is.finite(k_used) || k_used > 0.7) {
    cli::cli_warn(c(
      "The importance weights of {.code method = \"laplace\"} are unreliable (PSIS k-hat {round(k_used, 2)}): the intervals may be off.",
      i = "Try {.code svi_control(is_draws = 16000)}, or compare with {.code method = \"svi\"}."))
  }
  for (t in seq_along(fit$re)) {
    r <- fit$re[[t]]
    bd <- svir_laplace_b_draws(fit, t)
    cv <- vapply(bd, colMeans, numeric(length(r$levels)))
    s2 <- vapply(bd, function(b) apply(b, 2L, stats::sd), numeric(length(r$levels)))
    cv <- matrix(cv, ncol = length(r$cnms))
    s2 <- matrix(s2, ncol = length(r$cnms))
    dimnames(cv) <- dimnames(s2) <- list(r$levels, r$cnms)
    fit$ranef[[t]]$condval <- cv
    fit$ranef[[t]]$condsd <- s2
  }
  fit
}

# The summary's line for a Laplace fit.
svir_laplace_line <- function(object) {
  lp <- object$laplace
  line <- sprintf(paste0("Laplace mode of the variance parameters found in %d evaluations; %d importance ",
                         "draws (effective sample size %.0f%s), %.3g s; log p(y) ~ %.6g"),
                  as.integer(object$steps), as.integer(lp$S), lp$ess,
                  if (lp$round > 1L) sprintf(", proposal adapted %d time%s", lp$round - 1L,
                                             if (lp$round > 2L) "s" else "") else "",
                  object$time, lp$logml)
  if (isTRUE(lp$integrated > 0L)) {
    tm <- object$re[[lp$integrated]]
    line <- paste0(line, sprintf(paste0(
      "\nThe effects of (%s | %s), one per observation, are integrated out by adaptive ",
      "Gauss-Hermite quadrature inside the Laplace step; their draws come from their exact ",
      "conditionals."), paste(tm$cnms, collapse = " + "), tm$grpvar))
  }
  if (identical(lp$weighting, "marginal")) {
    line <- paste0(line, sprintf(paste0(
      "\nThe joint importance weights were unusable, so the variance parameters are weighted ",
      "by their Laplace marginal (k-hat %.2f) and the effects given them are the Laplace ",
      "Gaussian, as in INLA: close to exact for most GLMMs, approximate for binary or small ",
      "counts with few observations per group."), lp$khat_marginal))
  }
  line
}
