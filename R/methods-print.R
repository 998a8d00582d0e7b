# print() and the small accessors: nobs, formula, family, model.frame, sigma, vcov.

#' Print a variational GLMM fit
#'
#' A concise overview in the style of `print.merMod`: the model, family and
#' link, method, guide and backend, the number of observations and groups,
#' posterior means of the fixed effects, the random-effect standard deviations
#' and correlations, `sigma` or `phi`, and how the optimisation stopped.
#'
#' @param x an `svi_fit`.
#' @param digits number of significant digits.
#' @param ... unused.
#' @return `x`, invisibly.
#' @examples
#' fit <- svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy)
#' fit
#' @method print svi_fit
#' @export
print.svi_fit <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  cat(svir_title(x$method), "\n", sep = "")
  # the backend's reason is long: summary() prints it
  svir_cat_header(x$family, x$formula, svir_data_name(x), x$method, x$guide,
                  x$backend, NULL, centre = svir_centre_text(x))
  cat(svir_nobs_line(x$nobs, svir_ngrps(x)), "\n", sep = "")
  if (length(x$re)) {
    cat("Random effects (posterior means):\n")
    print(VarCorr(x), digits = digits)
  }
  cat("Fixed effects (posterior means):\n")
  print.default(format(x$fixef$mean, digits = digits), print.gap = 2L, quote = FALSE)
  if (!is.null(x$zi)) {
    cat("Zero-inflation coefficients (posterior means, logit scale):\n")
    print.default(format(x$zi$mean, digits = digits), print.gap = 2L, quote = FALSE)
  }
  if (x$family_name == "negbin") {
    cat("Dispersion phi (posterior mean): ", format(sigma(x), digits = digits), "\n", sep = "")
  }
  cat("Stopped: ", svir_stop_line(x), "\n", sep = "")
  if (!is.null(x$khat) && !is.na(x$khat) && x$khat > 0.7) {
    cat("PSIS k-hat: ", svir_khat_message(x$khat, x$method), "\n", sep = "")
  }
  if (!is.null(x$separation)) cat("Separation: ", svir_separation_message(x$separation), ".\n", sep = "")
  invisible(x)
}

#' Accessors for a variational GLMM fit
#'
#' `nobs()`: number of observations used (after `na.action`). `formula()`:
#' the model formula. `family()`: the family object. `model.frame()`: the
#' model frame. `sigma()`: the residual standard deviation (posterior mean)
#' for gaussian models, the negative binomial dispersion `phi` (posterior mean,
#' as `glmmTMB`'s `sigma()` does for `nbinom2`), and 1 for binomial and
#' Poisson models (as `lme4`). `vcov()`: the posterior covariance matrix of
#' the fixed effects under the variational approximation (exact: the fixed
#' effects are an affine map of its Gaussian coordinates); with
#' `component = "zi"`, that of the zero inflation's coefficients.
#'
#' @param object,x,formula an `svi_fit`.
#' @param component for `vcov()`: `"cond"` or `"zi"`, as in
#'   [fixef.svi_fit()].
#' @param ... unused.
#' @return See Description.
#' @name svi_fit-accessors
#' @importFrom stats nobs formula family model.frame sigma vcov
#' @examples
#' fit <- svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy)
#' nobs(fit); formula(fit); sigma(fit)
#' vcov(fit)
NULL

#' @rdname svi_fit-accessors
#' @method nobs svi_fit
#' @export
nobs.svi_fit <- function(object, ...) object$nobs

#' @rdname svi_fit-accessors
#' @method formula svi_fit
#' @export
formula.svi_fit <- function(x, ...) x$formula

#' @rdname svi_fit-accessors
#' @method family svi_fit
#' @export
family.svi_fit <- function(object, ...) object$family

#' @rdname svi_fit-accessors
#' @method model.frame svi_fit
#' @export
model.frame.svi_fit <- function(formula, ...) formula$frame

#' @rdname svi_fit-accessors
#' @method sigma svi_fit
#' @export
sigma.svi_fit <- function(object, ...) {
  idx <- object$index
  if (identical(object$method, "laplace")) {
    for (nm in c("sigma", "phi")) if (nm %in% colnames(object$draws)) return(mean(object$draws[, nm]))
    return(1)
  }
  if (!is.na(idx$sigma)) {
    s <- object$engine$mu[idx$sigma]
    v <- svir_guide_sd(object$engine, idx$sigma)^2
    return(object$scaling$y_scale * exp(s + v / 2))
  }
  if (!is.na(idx$phi)) {
    s <- object$engine$mu[idx$phi]
    v <- svir_guide_sd(object$engine, idx$phi)^2
    return(exp(s + v / 2))
  }
  1
}

#' @rdname svi_fit-accessors
#' @method vcov svi_fit
#' @export
vcov.svi_fit <- function(object, component = c("cond", "zi"), ...) {
  component <- svir_component(object, component)
  if (component == "zi") object$zi$vcov else object$fixef$vcov
}
