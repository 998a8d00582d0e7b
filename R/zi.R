# Zero inflation: svi_fit(..., ziformula = ) as glmmTMB's ziformula. The
# response is a structural zero with probability pi = logit^-1(Xz gamma)
# and otherwise follows the family (poisson or negbin):
#   p(0) = pi + (1 - pi) f(0),   p(y) = (1 - pi) f(y) for y > 0,
# so E(y) = (1 - pi) mu. Xz holds fixed effects only. The engine adds the
# zero-inflation layer to the family's log-likelihood
# (src/models/glmm/glmm_family.h); gamma follows the other globals.

# The ziformula, checked: NULL when there is no zero inflation (NULL or
# ~0), else a one-sided formula of fixed effects for a family that takes it.
svir_zi_formula <- function(ziformula, family_name) {
  if (is.null(ziformula)) return(NULL)
  if (!inherits(ziformula, "formula") || length(ziformula) != 2L) {
    svir_abort(c("{.arg ziformula} must be a one-sided formula such as {.code ~ 1} or {.code ~ x}.",
                 "i" = "{.code ziformula = ~0} (or {.code NULL}) fits no zero inflation."))
  }
  tt <- stats::terms(ziformula)
  if (length(attr(tt, "term.labels")) == 0L && attr(tt, "intercept") == 0L) return(NULL)
  if (length(lme4::findbars(ziformula))) {
    svir_abort(c("{.arg ziformula} takes fixed effects only in this version.",
                 "x" = "It has a random-effect term: {.code {deparse1(ziformula)}}.",
                 "i" = "Drop the {.code ( | )} term from {.arg ziformula}."))
  }
  if (!is.null(attr(tt, "offset"))) {
    svir_abort("{.arg ziformula} takes no {.fn offset}.")
  }
  ok <- names(svir_glmm_zi_pairs)
  if (!family_name %in% ok) {
    svir_abort(c("Zero inflation ({.arg ziformula}) takes the {.or {.val {ok}}} family, not {.val {family_name}}.",
                 "i" = "Use {.code family = poisson()} or {.code family = negbin()}, or leave {.arg ziformula} out."))
  }
  ziformula
}

# The formula of the model frame: the model's variables and the
# ziformula's, so that one na.action sees all of them.
svir_zi_frame_formula <- function(formula, zif) {
  if (is.null(zif)) return(formula)
  f <- formula
  f[[3L]] <- call("+", formula[[3L]], zif[[2L]])
  environment(f) <- environment(formula)
  f
}

# Xz (raw and internal), its terms and scaling, from the model frame.
svir_zi_design <- function(zif, mf, contrasts = NULL) {
  zt <- svir_terms_with_predvars(zif, mf)
  Xz <- svir_fixed_matrix(zt, mf, contrasts)
  cn <- colnames(Xz)
  has_int <- attr(zt, "intercept") == 1L && "(Intercept)" %in% cn
  scaling <- svir_scaling(Xz, numeric(nrow(Xz)), "zi", has_int)
  Xzs <- svir_scale_X(Xz, scaling)
  svir_check_rank(Xzs, "zero-inflation design", "", "ziformula")
  list(X = Xz, Xs = Xzs, terms = zt, scaling = scaling, names = cn,
       xlevels = stats::.getXlevels(zt, mf), contrasts = attr(Xz, "contrasts"))
}

# Xz for new data with the fit's terms, levels and contrasts.
svir_zi_newdata <- function(object, newdata) {
  zi <- object$zi_info
  if (is.null(newdata)) return(zi$X)
  mf <- tryCatch(
    stats::model.frame(zi$terms, newdata, na.action = stats::na.pass, xlev = zi$xlevels),
    error = function(e) svir_newdata_error(e)
  )
  stats::model.matrix(zi$terms, mf, contrasts.arg = zi$contrasts)
}

# pi at the posterior means of gamma (a plug-in, as fitted() is), or draws
# of pi [n x length(sel)] from the stored posterior draws `sel`.
svir_zi_prob <- function(object, Xz) {
  if (is.null(object$zi_info)) return(rep(0, nrow(Xz)))
  stats::plogis(drop(Xz %*% object$zi$mean))
}

svir_zi_prob_draws <- function(object, Xz, sel) {
  if (is.null(object$zi_info)) return(matrix(0, nrow(Xz), length(sel)))
  stats::plogis(svir_zi_eta_draws(object, Xz, sel))
}

# The zero inflation's linear predictor for the stored draws `sel`.
svir_zi_eta_draws <- function(object, Xz, sel) {
  g <- object$draws[sel, paste0("zi_", object$zi_info$names), drop = FALSE]
  Xz %*% t(g)
}

# The start of a zero-inflated fit (internal units): the fixed-effects
# zero-inflated GLM (random effects left out) by a few EM iterations from
# the GLM's beta (svir_init_mu), with the gamma intercept at the share of
# zeros a Poisson mean leaves unexplained. E step: each zero's probability
# of being structural; M step: a logistic fit of those to Xz, the count
# model's IRLS steps weighted by 1 - them and penalised by the fixed
# effects' priors (`pen`, svir_beta_penalty()), and phi (negbin) by a 1-d
# search. list(beta, gamma, phi); phi NULL for poisson. Why not the
# negative binomial's moments: its phi absorbs the excess zeros and starts
# pi near 0, where the gradient of gamma vanishes and noisy (minibatch)
# steps move slowly along the ridge of pi and phi.
svir_zi_start <- function(spec, beta, off, phi = NULL, iters = 25L,
                          pen = list(prec = rep(0, ncol(spec$X)), mean = rep(0, ncol(spec$X)))) {
  y <- spec$y
  X <- spec$X
  Xz <- spec$Xz
  nb <- !is.null(phi)
  g <- numeric(ncol(Xz))
  mu <- exp(off + drop(X %*% beta))
  f0 <- mean(exp(-mu))
  excess <- (mean(y == 0) - f0) / max(1 - f0, 1e-6)
  icpt <- match("(Intercept)", colnames(Xz))
  if (!is.na(icpt)) g[icpt] <- stats::qlogis(min(max(excess, 0.1), 0.9))
  start <- list(beta = beta, gamma = g, phi = phi)
  zero <- y == 0
  nb_ll <- function(lphi, w, mu) {
    ph <- exp(lphi)
    sum(w * stats::dnbinom(y, size = ph, mu = mu, log = TRUE))
  }
  out <- tryCatch({
    for (it in seq_len(iters)) {
      eta <- off + drop(X %*% beta)
      mu <- exp(eta)
      pz <- stats::plogis(drop(Xz %*% g))
      lf0 <- if (nb) phi * (log(phi) - log(phi + mu)) else -mu
      z <- ifelse(zero, pz / (pz + (1 - pz) * exp(lf0)), 0)
      g <- suppressWarnings(stats::glm.fit(Xz, z, family = stats::quasibinomial(), start = g,
                                           control = list(maxit = 10)))$coefficients
      # IRLS for the count model with prior weights 1 - z, penalised by the
      # fixed effects' priors (pen: svir_beta_penalty()), so that a level
      # with only zeros stays where its prior holds it
      wt <- (1 - z) * (if (nb) mu / (1 + mu / phi) else mu)
      zw <- eta - off + (y - mu) / mu
      beta <- solve(crossprod(X * sqrt(wt)) + diag(pen$prec, ncol(X)),
                    crossprod(X, wt * zw) + pen$prec * pen$mean)[, 1]
      if (nb) {
        mu <- exp(off + drop(X %*% beta))
        phi <- exp(stats::optimize(nb_ll, c(log(0.01), log(1e4)), w = 1 - z, mu = mu,
                                   maximum = TRUE)$maximum)
      }
      if (!all(is.finite(c(beta, g, phi)))) stop("not finite")
    }
    list(beta = beta, gamma = g, phi = phi)
  }, error = function(e) start)
  out$gamma <- pmin(pmax(out$gamma, -8), 8)
  out
}
