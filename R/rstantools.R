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
#' Models: GLMMs (`svi_fit`, the random effects drawn from their guides as
#' in [predict.svi_fit()], from the fit's seed, so that the verbs called
#' with the same `ndraws` use the same draws), networks (`svi_bnn`: `newdata` is required, the
#' training data is not kept) and count mixtures (`svi_mixture`:
#' `log_lik()` only, one column per row of counts, each row's density with
#' its label summed out; `newdata` required). The Poisson-lognormal model's
#' verbs are not written yet.
#'
#' @param object A fit from [svi_fit()].
#' @param newdata A data frame; `NULL`: the fitting data (GLMMs).
#' @param re.form,allow.new.levels As in [predict.svi_fit()] (GLMMs).
#' @param ndraws How many posterior draws (rows); `NULL`: all stored draws.
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
  y <- NULL
  if (need_y) {
    y <- svir_newdata_response(object, newdata)
    if (is.factor(y)) y <- as.integer(y != levels(y)[1L])
    y <- as.double(y)
  }
  list(eta = eta, draws = dr, y = y, names = rownames(newdata))
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
