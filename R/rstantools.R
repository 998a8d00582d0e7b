# The rstantools verbs (issue 18): posterior_epred(), posterior_predict()
# and log_lik() for svir's fits, so that loo::loo() and
# bayesplot::pp_check() work on them. The generics are rstantools' (a
# suggested package): the methods are registered when rstantools is loaded.

#' Posterior draws of expected values, predictions and log-likelihoods
#'
#' The verbs of \pkg{rstantools} for svir's fits: each returns a matrix with
#' one row per posterior draw and one column per observation, as rstanarm
#' and brms do, so that `loo::loo(log_lik(fit))` and
#' `bayesplot::ppc_dens_overlay(y, posterior_predict(fit))` work.
#'
#' * `posterior_epred()`: the expected response given each draw (the mean
#'   `mu`, times `1 - pi` with zero inflation; for a network, the
#'   response's mean in data units).
#' * `posterior_predict()`: a new response for each observation and draw,
#'   from the family with that draw's parameters.
#' * `log_lik()`: each observation's log density under each draw, at the
#'   observed response (of the fitting data, or of `newdata`, which must
#'   then hold the response).
#'
#' Models:
#'
#' * GLMMs (`svi_fit`): the random effects drawn from their guides as in
#'   [predict.svi_fit()], from the fit's seed, so that the verbs called with
#'   the same `ndraws` use the same draws. One column per observation.
#' * Networks (`svi_bnn`): `newdata` is required, the training data is not
#'   kept. One column per row of `newdata`.
#' * Poisson-lognormal models (`svi_pln`, [pln()]): one column per count,
#'   the entries of the `n x p` count matrix in column-major order (entry
#'   `(i, j)` in column `i + (j - 1) n`, named `"row:column"`), so that
#'   `as.vector(Y)` is the matching observed vector for bayesplot. The
#'   model is `Y_ij ~ Poisson(exp(O_ij + Z_ij))`, `Z_i ~ N(X_i B, Sigma)`;
#'   a fit has no posterior draws of `B` and `Sigma`, which are held at
#'   their estimates ([coef()], [sigma()]), and the draws are of the latent
#'   `Z`. For the fit's rows (`newdata = NULL`) they come from its
#'   variational posterior `q(Z_ij) = N(M_ij, S_ij^2)` (for `pln(rank = q)`
#'   without residual variances, through the factors, so that a row's
#'   entries are correlated), so that `colMeans(posterior_epred(fit))`
#'   estimates `fitted(fit)`, `exp(O + M + S^2 / 2)`. For new rows
#'   (`newdata`, with the covariates and the variables of the formula's
#'   `offset()` terms) they come from the model, `Z_i ~ N(X_i B, Sigma)`:
#'   the draws' mean estimates `predict(fit, newdata)`, and for `log_lik()`
#'   (which then needs the count matrix in `newdata`, under the formula's
#'   name) `log(colMeans(exp(ll)))` estimates each count's marginal log
#'   density. `posterior_epred()` gives `exp(O_ij + Z_ij)`,
#'   `posterior_predict()` a Poisson count from it, `log_lik()` the Poisson
#'   log density of the observed count. The draws of `Z` come from the
#'   fit's seed (1 where it has none), R's generator restored after, so
#'   that the three verbs called with the same `ndraws` see the same `Z`:
#'   `log_lik(fit)` is `dpois(y, posterior_epred(fit), log = TRUE)`.
#'   `ndraws = NULL` makes 1000 draws, or fewer so that the result has at
#'   most `2.5e7` entries.
#' * Count mixtures (`svi_mixture`, [count_mixture()]): `newdata` is
#'   required (a fit does not keep its counts), with the count matrix (for
#'   `log_lik()`, and for the others because the rows' clusters are
#'   inferred from their counts), and the covariates and offsets; the
#'   first `ndraws` of the fit's stored draws (`NULL`: all).
#'   `log_lik()` has one column per row of counts, each row's density with
#'   its label summed out. `posterior_epred()` and `posterior_predict()`
#'   have one column per count, in column-major order as for
#'   Poisson-lognormal models: `posterior_epred()` is, under each draw, the
#'   row's expected counts given its clusters' probabilities under that
#'   draw (`sum_k P(z_i = k | y_i) E(y_ij | z_i = k)`, `E` being the mean
#'   `exp(o_i + x_i gamma_j + mu_kj)`, times `1 - omega_j` with zero
#'   inflation, `(1 - beta_j)` times it plus `beta_j exp(b_j)` with a
#'   background, the row's total times the cluster's expected proportion
#'   for the Dirichlet-multinomial); `posterior_predict()` draws each
#'   row's label from those probabilities, then its counts from the
#'   family (for the Dirichlet-multinomial, with the row's total).
#'
#' @param object A fit from [svi_fit()].
#' @param newdata A data frame; `NULL`: the fitting data (GLMMs and
#'   Poisson-lognormal models; networks and count mixtures need it).
#' @param re.form,allow.new.levels As in [predict.svi_fit()] (GLMMs).
#' @param ndraws How many posterior draws (rows); `NULL`: all stored draws
#'   (Poisson-lognormal models: see above).
#' @param seed For `posterior_predict()`: `NULL` or an integer for
#'   [set.seed()]; the generator's state is restored afterwards.
#' @param ... Not used.
#' @return A numeric matrix, draws x observations.
#' @name svir-rstantools
#' @examples
#' fit <- svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy)
#' if (requireNamespace("rstantools", quietly = TRUE)) {
#'   ll <- rstantools::log_lik(fit)
#'   dim(ll)
#'   yrep <- rstantools::posterior_predict(fit, ndraws = 50, seed = 1)
#' }
NULL

# ---- GLMMs ------------------------------------------------------------------

# the draws' expected responses (n x S) and the pieces the family needs;
# the random effects' draws from their guides come from the fit's seed (the
# session's generator restored after), so that the verbs, called with the
# same ndraws, see the same draws
svir_glmm_draws_mu <- function(object, newdata, re.form, allow.new.levels, ndraws) {
  svir_check_flag(allow.new.levels, "allow.new.levels")
  keep <- svir_re_keep(object, re.form)
  des <- svir_design(object, newdata, keep, allow.new.levels)
  sel <- svir_draw_sel(object, ndraws)
  rng <- svir_sim_seed(if (is.null(object$seed)) 1L else object$seed %% .Machine$integer.max)
  E <- svir_eta_draws(object, des, sel)
  if (!is.null(rng$old)) assign(".Random.seed", rng$old, envir = .GlobalEnv)
  mu <- svir_linkinv(object$family)(E)
  Pz <- if (is.null(object$zi)) NULL else
    svir_zi_prob_draws(object, svir_zi_newdata(object, newdata), sel)
  list(des = des, sel = sel, mu = mu, Pz = Pz)
}

# the formula's response evaluated in newdata, or an error that says so
svir_newdata_response <- function(object, newdata) {
  lhs <- object$formula[[2L]]
  y <- tryCatch(eval(lhs, newdata, environment(object$formula)), error = function(e) NULL)
  if (is.null(y)) {
    cli::cli_abort(c("{.arg newdata} has no response {.code {deparse1(lhs)}}.",
                     i = "log_lik() needs the observed response of each row."),
                   class = "svir_error", call = NULL)
  }
  y
}

# the observed response (and binomial trials) of the fitting data or newdata
svir_glmm_observed <- function(object, newdata, n) {
  if (is.null(newdata)) {
    return(list(y = as.double(object$y), trials = svir_sim_trials(object, NULL, n)))
  }
  y <- svir_newdata_response(object, newdata)
  if (is.matrix(y) && ncol(y) == 2L) {
    return(list(y = as.double(y[, 1L]), trials = as.double(y[, 1L] + y[, 2L])))
  }
  if (is.factor(y)) y <- as.integer(y != levels(y)[1L])
  list(y = as.double(y), trials = if (object$family_name == "binomial") rep(1, length(y)))
}

#' @rdname svir-rstantools
#' @exportS3Method rstantools::posterior_epred
posterior_epred.svi_fit <- function(object, newdata = NULL, re.form = NULL, allow.new.levels = FALSE,
                                    ndraws = NULL, ...) {
  u <- svir_glmm_draws_mu(object, newdata, re.form, allow.new.levels, ndraws)
  m <- if (is.null(u$Pz)) u$mu else u$mu * (1 - u$Pz)
  out <- t(m)
  colnames(out) <- u$des$rownames
  out
}

#' @rdname svir-rstantools
#' @exportS3Method rstantools::posterior_predict
posterior_predict.svi_fit <- function(object, newdata = NULL, re.form = NULL, allow.new.levels = FALSE,
                                      ndraws = NULL, seed = NULL, ...) {
  rng <- svir_sim_seed(seed)
  if (!is.null(rng$old)) on.exit(assign(".Random.seed", rng$old, envir = .GlobalEnv))
  u <- svir_glmm_draws_mu(object, newdata, re.form, allow.new.levels, ndraws)
  n <- u$des$n
  S <- length(u$sel)
  fam <- object$family_name
  trials <- svir_sim_trials(object, newdata, n)
  dr <- object$draws[u$sel, , drop = FALSE]
  m <- t(u$mu) # S x n
  y <- switch(fam,
    gaussian = m + stats::rnorm(S * n) * dr[, "sigma"],
    binomial = matrix(stats::rbinom(S * n, rep(trials, each = S), m), S),
    poisson = matrix(stats::rpois(S * n, m), S),
    negbin = matrix(stats::rnbinom(S * n, size = dr[, "phi"], mu = m), S))
  if (!is.null(u$Pz)) y[matrix(stats::runif(S * n), S) < t(u$Pz)] <- 0
  y <- matrix(y, S)
  colnames(y) <- u$des$rownames
  y
}

#' @rdname svir-rstantools
#' @exportS3Method rstantools::log_lik
log_lik.svi_fit <- function(object, newdata = NULL, re.form = NULL, allow.new.levels = FALSE,
                            ndraws = NULL, ...) {
  u <- svir_glmm_draws_mu(object, newdata, re.form, allow.new.levels, ndraws)
  n <- u$des$n
  S <- length(u$sel)
  obs <- svir_glmm_observed(object, newdata, n)
  if (length(obs$y) != n) {
    cli::cli_abort("The response has {length(obs$y)} value{?s} where the design has {n} row{?s} (rows with missing values?).",
                   class = "svir_error", call = NULL)
  }
  dr <- object$draws[u$sel, , drop = FALSE]
  m <- t(u$mu)
  Y <- matrix(obs$y, S, n, byrow = TRUE)
  ll <- switch(object$family_name,
    gaussian = stats::dnorm(Y, m, dr[, "sigma"], log = TRUE),
    binomial = stats::dbinom(Y, matrix(obs$trials, S, n, byrow = TRUE), m, log = TRUE),
    poisson = stats::dpois(Y, m, log = TRUE),
    negbin = stats::dnbinom(Y, size = dr[, "phi"], mu = m, log = TRUE))
  ll <- matrix(ll, S)
  if (!is.null(u$Pz)) {
    pz <- t(u$Pz)
    # a zero is a structural zero or the family's
    ll <- ifelse(Y == 0, log(pz + (1 - pz) * exp(ll)), log1p(-pz) + ll)
  }
  colnames(ll) <- u$des$rownames
  ll
}

# ---- networks ---------------------------------------------------------------

# the network's draws at newdata: eta (n x S) and the response's observed
# values when newdata holds them
svir_bnn_draws_eta <- function(object, newdata, ndraws, need_y) {
  if (is.null(newdata) || !is.data.frame(newdata)) {
    cli::cli_abort(c("{.arg newdata} must be a data frame.",
                     i = "A network's fit does not keep its training data: pass it (or new rows) as {.arg newdata}."),
                   class = "svir_error", call = NULL)
  }
  tt <- stats::delete.response(object$tt)
  miss <- setdiff(all.vars(tt), names(newdata))
  if (length(miss)) {
    cli::cli_abort("{.arg newdata} lacks the model's predictor{?s} {.val {miss}}.", class = "svir_error",
                   call = NULL)
  }
  mf <- stats::model.frame(tt, newdata, xlev = object$xlevels, na.action = stats::na.pass)
  X <- svir_bnn_matrix(tt, mf, object$xlevels)
  Xs <- sweep(sweep(X, 2L, object$xcenter), 2L, object$xscale, "/")
  S <- nrow(object$draws)
  sel <- if (is.null(ndraws)) seq_len(S) else {
    if (!is.numeric(ndraws) || length(ndraws) != 1L || is.na(ndraws) || ndraws < 1) {
      cli::cli_abort("{.arg ndraws} must be a positive whole number or NULL (all {S} stored draws).",
                     class = "svir_error", call = NULL)
    }
    unique(round(seq(1, S, length.out = min(S, as.integer(ndraws)))))
  }
  dr <- object$draws[sel, , drop = FALSE]
  eta <- matrix(svir_bnn_forward(object$dims, object$model$activation, Xs, dr), nrow(Xs))
  list(eta = eta, draws = dr, y = if (need_y) svir_bnn_observed(object, newdata), names = rownames(newdata))
}

# newdata's observed response for a network (a factor: 1 for its second
# level)
svir_bnn_observed <- function(object, newdata) {
  y <- svir_newdata_response(object, newdata)
  if (is.factor(y)) y <- as.integer(y != levels(y)[1L])
  as.double(y)
}

#' @rdname svir-rstantools
#' @exportS3Method rstantools::posterior_epred
posterior_epred.svi_bnn <- function(object, newdata = NULL, ndraws = NULL, ...) {
  u <- svir_bnn_draws_eta(object, newdata, ndraws, FALSE)
  m <- if (object$family$family == "gaussian") object$ymean + object$yscale * u$eta else
    object$family$linkinv(u$eta)
  out <- t(m)
  colnames(out) <- u$names
  out
}

#' @rdname svir-rstantools
#' @exportS3Method rstantools::posterior_predict
posterior_predict.svi_bnn <- function(object, newdata = NULL, ndraws = NULL, seed = NULL, ...) {
  rng <- svir_sim_seed(seed)
  if (!is.null(rng$old)) on.exit(assign(".Random.seed", rng$old, envir = .GlobalEnv))
  u <- svir_bnn_draws_eta(object, newdata, ndraws, FALSE)
  S <- ncol(u$eta)
  n <- nrow(u$eta)
  e <- t(u$eta)
  y <- switch(object$family$family,
    gaussian = object$ymean + object$yscale * (e + stats::rnorm(S * n) * exp(u$draws[, ncol(u$draws)])),
    binomial = matrix(stats::rbinom(S * n, 1, stats::plogis(e)), S),
    poisson = matrix(stats::rpois(S * n, exp(e)), S))
  y <- matrix(y, S)
  colnames(y) <- u$names
  y
}

#' @rdname svir-rstantools
#' @exportS3Method rstantools::log_lik
log_lik.svi_bnn <- function(object, newdata = NULL, ndraws = NULL, ...) {
  u <- svir_bnn_draws_eta(object, newdata, ndraws, TRUE)
  S <- ncol(u$eta)
  n <- nrow(u$eta)
  e <- t(u$eta)
  Y <- matrix(u$y, S, n, byrow = TRUE)
  ll <- switch(object$family$family,
    gaussian = stats::dnorm(Y, object$ymean + object$yscale * e,
                            object$yscale * exp(u$draws[, ncol(u$draws)]), log = TRUE),
    binomial = stats::dbinom(Y, 1, stats::plogis(e), log = TRUE),
    poisson = stats::dpois(Y, exp(e), log = TRUE))
  ll <- matrix(ll, S)
  colnames(ll) <- u$names
  ll
}

# ---- count mixtures -----------------------------------------------------------

#' @rdname svir-rstantools
#' @exportS3Method rstantools::log_lik
log_lik.svi_mixture <- function(object, newdata = NULL, ndraws = NULL, ...) {
  abort <- function(msg, .envir = parent.frame()) {
    cli::cli_abort(msg, class = "svir_error", call = NULL, .envir = .envir)
  }
  if (is.null(newdata)) {
    abort(c("{.arg newdata} is required: a count-mixture fit does not keep its counts.",
            i = "Pass the data the fit was made on (or new rows) as {.arg newdata}."))
  }
  S <- nrow(object$engine$draws)
  if (is.null(ndraws)) ndraws <- S
  u <- svir_mix_new_rows(object, newdata, ndraws, TRUE, abort)
  ll <- u$loglik
  colnames(ll) <- if (is.null(u$rn)) rownames(newdata) else u$rn
  ll
}

# A count mixture's expected counts (predict FALSE) or replicated counts
# (TRUE) of newdata's rows under each of the first ndraws stored draws:
# draws x (n p), the count matrix's entries in column-major order. Each
# draw's cluster probabilities of the rows come from the engine (the
# densities log_lik() sums), one draw at a time.
svir_mix_draws_counts <- function(object, newdata, ndraws, predict) {
  abort <- function(msg, .envir = parent.frame()) {
    cli::cli_abort(msg, class = "svir_error", call = NULL, .envir = .envir)
  }
  if (is.null(newdata)) {
    abort(c("{.arg newdata} is required: a count-mixture fit does not keep its counts.",
            i = "Pass the data the fit was made on (or new rows) as {.arg newdata}."))
  }
  nd <- svir_mix_new_spec(object, newdata, abort)
  dat <- nd$dat
  dr <- object$engine$draws
  S <- nrow(dr)
  if (!is.null(ndraws)) {
    if (!is.numeric(ndraws) || length(ndraws) != 1L || !(ndraws >= 1)) {
      abort("{.arg ndraws} must be a number of posterior draws, at least 1.")
    }
    S <- min(as.integer(ndraws), S)
  }
  n <- dat$n
  p <- dat$p
  K <- object$K
  dx <- dat$dx
  dist <- object$family$dist
  nb <- dist %in% c("nb", "zinb")
  bg <- !is.null(object$bg_prior)
  # the parameters' places in a draw (the engine's order, mix_model.h)
  off_g <- K * p + 2L * p
  off_phi <- off_g + dx * p
  off_zi <- off_phi + if (nb) p else 0L
  off_bg <- off_zi + if (dist == "zinb") p else 0L
  Y <- if (dat$sparse) as.matrix(dat$Y) else dat$Y
  tot <- rowSums(Y)
  lin0 <- if (is.null(dat$O)) matrix(0, n, p) else matrix(dat$O, n, p)
  Xc <- if (dx > 0) unname(dat$X)
  tri <- if (K > 1L) upper.tri(diag(K), diag = TRUE) + 0
  out <- matrix(0, S, n * p)
  for (s in seq_len(S)) {
    th <- dr[s, ]
    # the rows' cluster probabilities under this draw, from the engine
    r <- .Call(C_svir_mix_resp_r, nd$spec, dr[s, , drop = FALSE], 1L, FALSE)
    mu <- matrix(th[seq_len(K * p)], K, p, byrow = TRUE)
    if (dist == "dirmult") {
      al <- exp(mu)
      # each cluster's expected proportions, times the row's total
      if (!predict) {
        m <- r %*% (al / rowSums(al))
        out[s, ] <- as.vector(m * tot)
        next
      }
    } else {
      lin <- lin0
      if (dx > 0) lin <- lin + Xc %*% matrix(th[off_g + seq_len(dx * p)], dx, p, byrow = TRUE)
      phi <- if (nb) exp(th[off_phi + seq_len(p)])
      om <- if (dist == "zinb") stats::plogis(th[off_zi + seq_len(p)])
      if (bg) {
        bgm <- exp(th[off_bg + seq_len(p)])
        psi <- exp(th[off_bg + p + seq_len(p)])
        beta <- stats::plogis(th[off_bg + 2L * p + seq_len(p)])
      }
      if (!predict) {
        # the mean given each cluster, weighted by the row's probability of it
        m <- 0
        for (k in seq_len(K)) m <- m + r[, k] * exp(lin + rep(mu[k, ], each = n))
        if (dist == "zinb") m <- m * rep(1 - om, each = n)
        if (bg) m <- m * rep(1 - beta, each = n) + rep(beta * bgm, each = n)
        out[s, ] <- as.vector(m)
        next
      }
    }
    # a label per row from its cluster probabilities, then the counts
    z <- if (K == 1L) rep(1L, n) else 1L + rowSums(stats::runif(n) > (r %*% tri)[, -K, drop = FALSE])
    if (dist == "dirmult") {
      a <- al[z, , drop = FALSE]
      g <- matrix(stats::rgamma(n * p, a), n)
      gs <- rowSums(g)
      pr <- g / gs
      # a draw whose gammas all underflow: the expected proportions
      bad <- !is.finite(gs) | gs <= 0
      if (any(bad)) pr[bad, ] <- a[bad, , drop = FALSE] / rowSums(a[bad, , drop = FALSE])
      # the multinomial by binomials column after column
      y <- matrix(0, n, p)
      left <- tot
      rest <- rep(1, n)
      for (j in seq_len(p)) {
        q <- if (j == p) rep(1, n) else pmin(1, pmax(0, pr[, j] / pmax(rest, 1e-300)))
        y[, j] <- stats::rbinom(n, left, q)
        left <- left - y[, j]
        rest <- rest - pr[, j]
      }
    } else {
      m <- exp(lin + mu[z, , drop = FALSE])
      y <- if (nb) stats::rnbinom(n * p, size = rep(phi, each = n), mu = m) else stats::rpois(n * p, m)
      if (dist == "zinb") y[stats::runif(n * p) < rep(om, each = n)] <- 0
      if (bg) {
        b <- stats::runif(n * p) < rep(beta, each = n)
        y[b] <- stats::rnbinom(sum(b), size = rep(psi, each = n)[b], mu = rep(bgm, each = n)[b])
      }
    }
    out[s, ] <- as.vector(y)
  }
  colnames(out) <- svir_entry_names(if (is.null(dat$rn)) rownames(newdata) else dat$rn, object$colnames, n, p)
  out
}

#' @rdname svir-rstantools
#' @exportS3Method rstantools::posterior_epred
posterior_epred.svi_mixture <- function(object, newdata = NULL, ndraws = NULL, ...) {
  svir_mix_draws_counts(object, newdata, ndraws, FALSE)
}

#' @rdname svir-rstantools
#' @exportS3Method rstantools::posterior_predict
posterior_predict.svi_mixture <- function(object, newdata = NULL, ndraws = NULL, seed = NULL, ...) {
  rng <- svir_sim_seed(seed)
  if (!is.null(rng$old)) on.exit(assign(".Random.seed", rng$old, envir = .GlobalEnv))
  svir_mix_draws_counts(object, newdata, ndraws, TRUE)
}

# ---- Poisson-lognormal models -------------------------------------------------

# names of the entries of an n x p count matrix in column-major order:
# "row:column" (rows numbered where they have no names)
svir_entry_names <- function(rn, cn, n, p) {
  if (is.null(rn) || length(rn) != n) rn <- as.character(seq_len(n))
  if (is.null(cn) || length(cn) != p) cn <- paste0("Y", seq_len(p))
  paste(rep(rn, length(cn)), rep(cn, each = n), sep = ":")
}

# The covariates (X) and offsets (O, nn x p) of new rows for a PLN fit, as
# predict.svi_pln() reads them; and their counts when need_y (NULL when
# newdata lacks them and they are not needed)
svir_pln_new_rows <- function(object, newdata, need_y) {
  abort <- function(msg, .envir = parent.frame()) {
    cli::cli_abort(msg, class = "svir_error", call = NULL, .envir = .envir)
  }
  nd0 <- newdata
  if (!is.data.frame(newdata)) newdata <- as.data.frame(newdata)
  p <- object$p
  mf <- tryCatch(stats::model.frame(object$terms, newdata, xlev = object$xlevels, na.action = stats::na.pass),
                 error = function(e) abort(c("The new rows' covariates could not be read from {.arg newdata}.",
                                             x = conditionMessage(e))))
  X <- stats::model.matrix(object$terms, mf)
  nn <- nrow(X)
  O <- stats::model.offset(mf)
  if (is.null(O)) {
    O <- matrix(0, nn, p)
  } else if (is.null(dim(O)) && length(O) == nn) {
    O <- matrix(as.double(O), nn, p)
  } else if (!is.matrix(O) || !identical(dim(O), c(nn, p))) {
    abort("The offset must have one value per row of {.arg newdata} ({nn}) or one per count ({nn} x {p}).")
  }
  storage.mode(O) <- "double"
  if (anyNA(X) || anyNA(O)) abort("{.arg newdata} has missing covariates or offsets: drop or fill those rows.")
  Y <- NULL
  if (need_y) {
    lhs <- object$formula[[2L]]
    if (!all(all.vars(lhs) %in% names(nd0))) {
      abort(c("{.arg newdata} has no count matrix {.code {deparse1(lhs)}}.",
              i = "log_lik() needs the observed counts of the new rows."))
    }
    Y <- svir_pln_response(object$formula, nd0, abort)
    if (isS4(Y)) Y <- as.matrix(Y)
    cn <- colnames(object$coefficients)
    if (!is.null(colnames(Y)) && !is.null(cn) && all(cn %in% colnames(Y))) {
      Y <- Y[, match(cn, colnames(Y)), drop = FALSE]
    } else if (ncol(Y) != p) {
      abort("The new count matrix has {ncol(Y)} column{?s}; the fit had {p}.")
    }
    if (nrow(Y) != nn) abort("The new count matrix has {nrow(Y)} row{?s}; {.arg newdata} has {nn}.")
    storage.mode(Y) <- "double"
  }
  list(X = X, O = O, Y = Y, n = nn, rn = rownames(newdata))
}

# Draws of the log means O + Z of the counts, draws x (n p) (column-major
# over the count matrix): for the fit's rows (newdata NULL) from the latent
# layer's variational posterior q(Z_i) (for PLN-PCA, through its factors);
# for new rows from the model, Z_i ~ N(X_i B, Sigma), at the fit's B and
# Sigma. R's generator is seeded with the fit's seed (1 where it has none)
# and restored after, so that the verbs called with the same ndraws see the
# same draws.
svir_pln_draws_eta <- function(object, newdata, ndraws, need_y) {
  svir_pln_check(object, need = "X")
  p <- object$p
  if (is.null(newdata)) {
    n <- object$n
    rn <- rownames(object$Y)
  } else {
    nr <- svir_pln_new_rows(object, newdata, need_y)
    n <- nr$n
    rn <- nr$rn
  }
  np <- as.double(n) * p
  if (is.null(ndraws)) {
    ndraws <- max(1, min(1000, floor(2.5e7 / np)))
  } else {
    ndraws <- svir_check_whole(ndraws, "ndraws", 1L)
  }
  S <- as.integer(ndraws)
  if (S * np > 2^31 - 1) {
    cli::cli_abort(c("{S} draws of {n} x {p} counts would be a matrix of {format(S * np, big.mark = ',')} entries.",
                     i = "Ask for fewer draws ({.arg ndraws})."),
                   class = "svir_error", call = NULL)
  }
  B <- object$coefficients
  seed <- if (is.null(object$seed)) 1L else object$seed %% .Machine$integer.max
  rng <- svir_sim_seed(seed)
  on.exit(if (!is.null(rng$old)) assign(".Random.seed", rng$old, envir = .GlobalEnv))
  if (is.null(newdata)) {
    O <- svir_pln_O(object)
    XB <- object$X %*% B
    Y <- if (need_y) {
      svir_pln_check(object, need = "Y")
      as.double(as.matrix(object$Y))
    }
    if (svir_pln_is_pca(object)) {
      # PLN-PCA: Z_i = X_i B + C w_i with w_i ~ q(w_i) = N(m_i, diag(s_i^2))
      C <- object$loadings
      Fm <- object$factors$mean
      Fs <- object$factors$sd
      q <- ncol(C)
      base <- as.vector(O + XB)
      eta <- t(vapply(seq_len(S), function(s) {
        base + as.vector(tcrossprod(Fm + Fs * matrix(stats::rnorm(n * q), n, q), C))
      }, numeric(np)))
    } else {
      lat <- svir_pln_latent(object)
      eta <- matrix(stats::rnorm(S * np), S) * rep(as.vector(lat$S), each = S) +
        rep(as.vector(O + lat$M), each = S)
    }
  } else {
    Y <- if (need_y) as.vector(nr$Y)
    base <- as.vector(nr$O + nr$X %*% B)
    draw_z <- if (!is.null(object$loadings)) {
      W <- object$loadings
      psi <- object$psi
      function() {
        z <- tcrossprod(matrix(stats::rnorm(n * ncol(W)), n), W)
        if (!is.null(psi)) z <- z + matrix(stats::rnorm(n * p), n) * rep(sqrt(psi), each = n)
        z
      }
    } else {
      U <- tryCatch(chol(svir_pln_Sigma(object)), error = function(e) NULL)
      if (is.null(U)) {
        cli::cli_abort("The fit's covariance matrix is not positive definite: new rows' latent values cannot be drawn.",
                       class = "svir_error", call = NULL)
      }
      function() matrix(stats::rnorm(n * p), n) %*% U
    }
    eta <- t(vapply(seq_len(S), function(s) base + as.vector(draw_z()), numeric(np)))
  }
  eta <- matrix(eta, S)
  list(eta = eta, y = Y, n = n, p = p, S = S,
       names = svir_entry_names(rn, colnames(object$coefficients), n, p))
}

#' @rdname svir-rstantools
#' @exportS3Method rstantools::posterior_epred
posterior_epred.svi_pln <- function(object, newdata = NULL, ndraws = NULL, ...) {
  u <- svir_pln_draws_eta(object, newdata, ndraws, FALSE)
  out <- exp(u$eta)
  colnames(out) <- u$names
  out
}

#' @rdname svir-rstantools
#' @exportS3Method rstantools::posterior_predict
posterior_predict.svi_pln <- function(object, newdata = NULL, ndraws = NULL, seed = NULL, ...) {
  rng <- svir_sim_seed(seed)
  if (!is.null(rng$old)) on.exit(assign(".Random.seed", rng$old, envir = .GlobalEnv))
  u <- svir_pln_draws_eta(object, newdata, ndraws, FALSE)
  out <- matrix(stats::rpois(length(u$eta), exp(u$eta)), u$S)
  colnames(out) <- u$names
  out
}

#' @rdname svir-rstantools
#' @exportS3Method rstantools::log_lik
log_lik.svi_pln <- function(object, newdata = NULL, ndraws = NULL, ...) {
  u <- svir_pln_draws_eta(object, newdata, ndraws, TRUE)
  # log dpois(y, exp(eta)), without forming exp(eta) twice
  Y <- matrix(u$y, u$S, length(u$y), byrow = TRUE)
  ll <- Y * u$eta - exp(u$eta) - lgamma(Y + 1)
  colnames(ll) <- u$names
  ll
}

# ---- posterior predictive checks ----------------------------------------------

#' Posterior predictive checks
#'
#' `pp_check()` (the generic of \pkg{bayesplot}, a suggested package) for
#' svir's fits, as for rstanarm's and brms's: the observed response against
#' replicated data sets from [posterior_predict()][svir-rstantools], drawn
#' by one of bayesplot's `ppc_` functions.
#'
#' The observed values are those the fit's [log_lik()][svir-rstantools]
#' uses: for GLMMs the fitting data's response (or `newdata`'s); networks
#' and count mixtures keep no data, so `newdata` (holding the response, or
#' the count matrix) is required; for Poisson-lognormal models and count
#' mixtures, the count matrix's entries in column-major order.
#'
#' @param object A fit from [svi_fit()]: a GLMM, a network ([bnn()]), a
#'   Poisson-lognormal model ([pln()]) or a count mixture
#'   ([count_mixture()]).
#' @param type The plot: a bayesplot `ppc_` function's name without the
#'   prefix, such as `"dens_overlay"` (the default), `"hist"`,
#'   `"ecdf_overlay"`, `"stat"`, `"bars"` or `"rootogram"` (counts).
#' @param ndraws The number of replicated data sets (posterior draws).
#' @param newdata Rows to check on, with the response; `NULL`: the fit's
#'   own data where it keeps it.
#' @param seed A seed for the replicates' draws (R's generator is restored
#'   after), or `NULL`.
#' @param ... Passed to the `ppc_` function (`stat = "mean"` for `"stat"`).
#' @return A ggplot object (bayesplot's).
#' @examplesIf requireNamespace("bayesplot", quietly = TRUE) && requireNamespace("lme4", quietly = TRUE)
#' data(sleepstudy, package = "lme4")
#' fit <- svi_fit(Reaction ~ Days + (Days | Subject), data = sleepstudy, seed = 1)
#' bayesplot::pp_check(fit)
#' bayesplot::pp_check(fit, type = "stat", stat = "sd")
#' @name svir-pp_check
NULL

# the observed values and the replicates (draws x observations) for
# pp_check()
svir_pp_data <- function(object, newdata, ndraws, seed) {
  abort <- function(msg, .envir = parent.frame()) {
    cli::cli_abort(msg, class = "svir_error", call = NULL, .envir = .envir)
  }
  if (!is.numeric(ndraws) || length(ndraws) != 1L || is.na(ndraws) || ndraws < 1) {
    abort("{.arg ndraws} must be a positive whole number of replicated data sets.")
  }
  ndraws <- as.integer(ndraws)
  if (inherits(object, "svi_bnn")) {
    yrep <- posterior_predict.svi_bnn(object, newdata = newdata, ndraws = ndraws, seed = seed)
    y <- svir_bnn_observed(object, newdata)
  } else if (inherits(object, "svi_pln")) {
    yrep <- posterior_predict.svi_pln(object, newdata = newdata, ndraws = ndraws, seed = seed)
    y <- svir_pln_draws_eta(object, newdata, 1L, TRUE)$y
  } else if (inherits(object, "svi_mixture")) {
    yrep <- posterior_predict.svi_mixture(object, newdata = newdata, ndraws = ndraws, seed = seed)
    Y <- svir_mix_new_spec(object, newdata, abort)$dat$Y
    y <- as.double(as.matrix(Y))
  } else {
    yrep <- posterior_predict.svi_fit(object, newdata = newdata, ndraws = ndraws, seed = seed)
    y <- svir_glmm_observed(object, newdata, ncol(yrep))$y
  }
  if (length(y) != ncol(yrep) || anyNA(y)) {
    abort("The observed response has {length(y)} value{?s} (or missing ones) where the replicates have {ncol(yrep)}.")
  }
  list(y = y, yrep = yrep)
}

svir_pp_check <- function(object, type, ndraws, newdata, seed, ...) {
  if (!requireNamespace("bayesplot", quietly = TRUE)) {
    cli::cli_abort(c("pp_check() needs the {.pkg bayesplot} package.",
                     i = "Install it (Debian: {.code apt-get install r-cran-bayesplot})."),
                   class = "svir_error", call = NULL)
  }
  fun <- if (is.character(type) && length(type) == 1L && !is.na(type)) paste0("ppc_", sub("^ppc_", "", type))
  if (is.null(fun) || !exists(fun, envir = asNamespace("bayesplot"), mode = "function", inherits = FALSE)) {
    cli::cli_abort(c("{.arg type} must name one of bayesplot's {.code ppc_} functions without the prefix.",
                     i = "For example {.val dens_overlay}, {.val hist}, {.val ecdf_overlay}, {.val stat} or {.val bars}."),
                   class = "svir_error", call = NULL)
  }
  u <- svir_pp_data(object, newdata, ndraws, seed)
  get(fun, envir = asNamespace("bayesplot"))(y = u$y, yrep = u$yrep, ...)
}

#' @rdname svir-pp_check
#' @exportS3Method bayesplot::pp_check
pp_check.svi_fit <- function(object, type = "dens_overlay", ndraws = 50, newdata = NULL, seed = NULL, ...) {
  svir_pp_check(object, type, ndraws, newdata, seed, ...)
}

#' @rdname svir-pp_check
#' @exportS3Method bayesplot::pp_check
pp_check.svi_bnn <- function(object, type = "dens_overlay", ndraws = 50, newdata = NULL, seed = NULL, ...) {
  svir_pp_check(object, type, ndraws, newdata, seed, ...)
}

#' @rdname svir-pp_check
#' @exportS3Method bayesplot::pp_check
pp_check.svi_pln <- function(object, type = "dens_overlay", ndraws = 50, newdata = NULL, seed = NULL, ...) {
  svir_pp_check(object, type, ndraws, newdata, seed, ...)
}

#' @rdname svir-pp_check
#' @exportS3Method bayesplot::pp_check
pp_check.svi_mixture <- function(object, type = "dens_overlay", ndraws = 50, newdata = NULL, seed = NULL,
                                 ...) {
  svir_pp_check(object, type, ndraws, newdata, seed, ...)
}
