# Posterior draws of the global parameters: as.matrix, as.data.frame,
# as_draws_df (posterior package).

#' Posterior draws of a variational GLMM fit
#'
#' Draws of the global parameters from the variational posterior, in the
#' units of the data: the fixed effects (named as the columns of the model
#' matrix), the random-effect standard deviations `sd_<group>__<coef>` and
#' correlations `cor_<group>__<coef1>__<coef2>`, `sigma` (gaussian) and `phi`
#' (negative binomial). The number of draws is `svi_control(ndraws = )`.
#'
#' `as_draws_df()` is a method for the generic of the posterior package
#' (registered when posterior is installed), so that
#' `posterior::summarise_draws()` and friends work on a fit.
#'
#' @param x an `svi_fit`.
#' @param row.names,optional passed to [as.data.frame()].
#' @param ... unused.
#' @return `as.matrix()`: a numeric matrix, one row per draw and one column per
#'   parameter. `as.data.frame()`: the same as a data.frame. `as_draws_df()`:
#'   a `draws_df` object.
#' @examples
#' fit <- svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy)
#' head(as.matrix(fit))
#' if (requireNamespace("posterior", quietly = TRUE)) {
#'   posterior::summarise_draws(posterior::as_draws_df(fit))
#' }
#' @name svi_fit-draws
NULL

#' @rdname svi_fit-draws
#' @method as.matrix svi_fit
#' @export
as.matrix.svi_fit <- function(x, ...) {
  x$draws
}

#' @rdname svi_fit-draws
#' @method as.data.frame svi_fit
#' @export
as.data.frame.svi_fit <- function(x, row.names = NULL, optional = FALSE, ...) {
  as.data.frame(x$draws, row.names = row.names, optional = TRUE)
}

#' @rdname svi_fit-draws
#' @exportS3Method posterior::as_draws_df
as_draws_df.svi_fit <- function(x, ...) {
  if (!requireNamespace("posterior", quietly = TRUE)) {
    cli::cli_abort("The {.pkg posterior} package is needed for {.fun as_draws_df}.",
                   class = "svir_error", call = NULL)
  }
  posterior::as_draws_df(x$draws)
}
