# The lme4 and stats verbs on Poisson-lognormal fits (issue 15): summary(),
# fixef(), ranef(), vcov() and simulate(), with the meanings they have in
# the model Z_i ~ N(X_i B, Sigma), Y_ij ~ Poisson(exp(O_ij + Z_ij)).

#' Summary, fixed and random effects, and simulations of a Poisson-lognormal fit
#'
#' The verbs of [lme4::lmer()] fits, for a fit with `family = pln()`: the
#' coefficients `B` are its fixed effects, and each row's latent effects
#' `W_i = Z_i - X_i B` (its deviation from the covariates' prediction, with
#' covariance `Sigma` across rows) its random effects.
#'
#' * `summary()`: the model, the fit's criteria ([pln_criteria()]), the
#'   coefficients (with their posterior sd under `globals = "bayes"`; the
#'   draws' after [pln_mcmc()]) and the latent standard deviations and
#'   correlations.
#' * `fixef()`: `B`, covariates by count columns (as [coef()]).
#' * `ranef()`: the posterior means of `W_i`, `M - X B`, an `n x p` matrix
#'   with the variational variances `S^2` as attribute `"postVar"`.
#' * `vcov()`: the posterior covariance of `vec(B)` (columns of `B` stacked),
#'   `Sigma` kronecker `(X'X)^-1`, for `globals = "bayes"` (the draws'
#'   covariance after [pln_mcmc()]); point estimates
#'   (`globals = "point"`, the default) have none, and say so.
#' * `simulate()`: new count matrices from the fitted model at the fit's
#'   covariates and offsets: `Z_i ~ N(X_i B, Sigma)`, `Y_ij ~
#'   Poisson(exp(O_ij + Z_ij))`.
#'
#' @param object A fit with `family = pln()` (class `"svi_pln"`).
#' @param nsim Number of simulated count matrices.
#' @param seed As in [stats::simulate()]: `NULL` or an integer for
#'   [set.seed()].
#' @param ... Not used.
#' @return `summary()`: an object of class `"summary.svi_pln"` (printed).
#'   `fixef()`: a matrix. `ranef()`: a matrix with attribute `"postVar"`.
#'   `vcov()`: a `dp x dp` matrix with rows named `"covariate:column"`.
#'   `simulate()`: a list of `nsim` count matrices with attribute `"seed"`.
#' @examples
#' set.seed(4)
#' d <- data.frame(x = rnorm(100))
#' d$Y <- matrix(rpois(300, exp(1 + 0.5 * d$x)), 100)
#' fit <- svi_fit(Y ~ x, data = d, family = pln(globals = "bayes"))
#' summary(fit)
#' fixef(fit)
#' dim(ranef(fit))
#' vcov(fit)[1:3, 1:3]
#' str(simulate(fit, nsim = 2, seed = 1))
#' @name summary.svi_pln
#' @export
summary.svi_pln <- function(object, ...) {
  svir_pln_check(object)
  B <- object$coefficients
  sdiag <- svir_pln_Sigma_diag(object)
  se <- if (!is.null(object$mcmc)) {
    apply(object$mcmc$B, c(2, 3), stats::sd) # pln_mcmc(): the draws'
  } else if (!is.null(object$XtXinv)) {
    sqrt(outer(diag(object$XtXinv), sdiag))
  }
  # the correlations' quantiles over all pairs (up to 2000 columns)
  lower <- if (object$p <= 2000L) {
    R <- stats::cov2cor(svir_pln_Sigma(object))
    R[lower.tri(R)]
  } else NULL
  out <- list(
    call = object$call, formula = object$formula, n = object$n, p = object$p,
    covariance = svir_pln_covname(object), globals = object$globals,
    method = if (identical(object$method, "qem")) "qem" else "vem",
    criteria = pln_criteria(object)[, c("df", "loglik", "BIC", "ICL")],
    stop_reason = object$stop_reason, steps = object$steps, time = object$time,
    coefficients = B, se = se,
    sd = stats::quantile(sqrt(sdiag), c(0, 0.25, 0.5, 0.75, 1)),
    cor = if (length(lower)) stats::quantile(lower, c(0, 0.25, 0.5, 0.75, 1)) else NULL,
    sigma_post = if (is.null(object$sigma_post)) NULL else pln_sigma_posterior(object),
    mcmc = if (is.null(object$mcmc)) NULL else object$mcmc[c("chains", "iter", "warmup", "ess_min",
                                                               "rhat_max", "time")])
  class(out) <- "summary.svi_pln"
  out
}

#' @rdname summary.svi_pln
#' @param x A `summary.svi_pln` object.
#' @param digits Significant digits.
#' @export
print.summary.svi_pln <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  cat("Poisson-lognormal model (svir), ", if (x$method == "qem") "QEM" else "variational EM",
      "; covariance: ", x$covariance, "\n", sep = "")
  cat("Formula: ", paste(deparse(x$formula, width.cutoff = 500L), collapse = " "), "\n", sep = "")
  cat(x$n, " rows x ", x$p, " count columns; stopped: ", x$stop_reason, " after ", x$steps,
      " steps (", format(x$time, digits = 3), " s)\n\n", sep = "")
  print(x$criteria, digits = max(digits, 7L), row.names = FALSE)
  if (!is.null(x$mcmc)) {
    mc <- x$mcmc
    cat(sprintf("\nB and Sigma below from MCMC (pln_mcmc): %d chains of %d iterations (%d warm-up), smallest ESS %.0f, largest R-hat %.3f, %.1f s; the criteria above are the variational fit's.\n",
                mc$chains, mc$iter, mc$warmup, mc$ess_min, mc$rhat_max, mc$time))
  }
  k <- seq_len(min(6L, ncol(x$coefficients)))
  cat("\nCoefficients B (covariates x count columns", if (ncol(x$coefficients) > 6L)
    paste0(", the first 6 of ", ncol(x$coefficients)) else "", "):\n", sep = "")
  print(signif(x$coefficients[, k, drop = FALSE], digits))
  if (!is.null(x$se)) {
    cat("Posterior sd:\n")
    print(signif(x$se[, k, drop = FALSE], digits))
  } else {
    cat("(point estimates: fit with pln(globals = \"bayes\") for their posterior)\n")
  }
  if (!is.null(x$sigma_post)) {
    pr <- attr(x$sigma_post, "prior")
    cat("\nLatent variances diag(Sigma), posterior (prior: Sigma ~ inverse-Wishart(", format(pr$df),
        ", ", format(pr$scale), " I)", if (nrow(x$sigma_post) > 6L)
          paste0("; the first 6 of ", nrow(x$sigma_post)) else "", "):\n", sep = "")
    print(signif(as.matrix(x$sigma_post[seq_len(min(6L, nrow(x$sigma_post))), ]), digits))
  }
  cat("\nLatent standard deviations sqrt(diag(Sigma)) (min, quartiles, max):\n")
  print(signif(x$sd, digits))
  if (!is.null(x$cor)) {
    cat("Latent correlations (min, quartiles, max; pln_cor() gives them all):\n")
    print(signif(x$cor, digits))
  }
  invisible(x)
}

#' @rdname summary.svi_pln
#' @export
fixef.svi_pln <- function(object, ...) {
  svir_pln_check(object)
  object$coefficients
}

#' @rdname summary.svi_pln
#' @export
ranef.svi_pln <- function(object, ...) {
  svir_pln_check(object, need = "X")
  lat <- svir_pln_latent(object)
  W <- lat$M - object$X %*% object$coefficients
  dimnames(W) <- dimnames(lat$M)
  attr(W, "postVar") <- lat$S^2
  W
}

#' @rdname summary.svi_pln
#' @export
vcov.svi_pln <- function(object, ...) {
  svir_pln_check(object)
  if (is.null(object$XtXinv)) {
    cli::cli_abort(c("This fit has point estimates of {.code B}, with no posterior covariance.",
                     i = "Refit with {.code family = pln(globals = \"bayes\")}."),
                   class = "svir_error", call = NULL)
  }
  B <- object$coefficients
  k <- length(B)
  if (as.double(k)^2 > 1e8) {
    cli::cli_abort(c("The covariance of all {k} coefficients would have {format(as.double(k)^2, big.mark = ',')} entries.",
                     i = "It is {.code kronecker(sigma(fit), fit$XtXinv)}; {.fn confint} gives the intervals."),
                   class = "svir_error", call = NULL)
  }
  nm <- paste(rep(rownames(B), ncol(B)), rep(colnames(B), each = nrow(B)), sep = ":")
  if (!is.null(object$mcmc)) {
    # pln_mcmc(): the draws' covariance, in the same order (column by column)
    V <- stats::cov(matrix(object$mcmc$B, dim(object$mcmc$B)[1]))
  } else {
    V <- kronecker(svir_pln_Sigma(object), object$XtXinv)
  }
  dimnames(V) <- list(nm, nm)
  V
}

#' @rdname summary.svi_pln
#' @importFrom stats simulate
#' @export
simulate.svi_pln <- function(object, nsim = 1, seed = NULL, ...) {
  svir_pln_check(object, need = "X")
  if (!is.numeric(nsim) || length(nsim) != 1L || !is.finite(nsim) || nsim < 1 ||
      nsim != round(nsim)) {
    cli::cli_abort("{.arg nsim} must be a positive whole number.", class = "svir_error", call = NULL)
  }
  rng <- svir_sim_seed(seed)
  if (!is.null(rng$old)) on.exit(assign(".Random.seed", rng$old, envir = .GlobalEnv))
  rng_state <- rng$state
  n <- object$n
  p <- object$p
  mean <- object$X %*% object$coefficients
  if (!is.null(object$offset)) mean <- mean + object$offset
  draw_z <- if (!is.null(object$loadings)) {
    W <- object$loadings
    if (is.null(object$psi)) {
      function() matrix(stats::rnorm(n * ncol(W)), n) %*% t(W)
    } else {
      function() matrix(stats::rnorm(n * ncol(W)), n) %*% t(W) +
        sweep(matrix(stats::rnorm(n * p), n), 2L, sqrt(object$psi), "*")
    }
  } else {
    U <- chol(svir_pln_Sigma(object))
    function() matrix(stats::rnorm(n * p), n) %*% U
  }
  sims <- lapply(seq_len(nsim), function(s) {
    Y <- matrix(stats::rpois(n * p, exp(mean + draw_z())), n, p)
    dimnames(Y) <- list(rownames(object$Y), colnames(object$coefficients))
    Y
  })
  names(sims) <- paste0("sim_", seq_len(nsim))
  attr(sims, "seed") <- rng_state
  sims
}
