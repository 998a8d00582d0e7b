# plot(): the ELBO trace.

#' Plot the ELBO trace of a variational GLMM fit
#'
#' Draws the ELBO estimate at each step (grey), its running mean over the
#' window of the stopping rule (`svi_control(eval_every = )`, black), and
#' marks the steps where the step size was reduced (dashed vertical lines,
#' when the engine reports them). Steps whose update was rejected (ELBO `NaN`)
#' are left out.
#'
#' @param x an `svi_fit`.
#' @param window width of the running mean (default: the fit's `eval_every`).
#' @param skip number of initial steps to leave out, so that the early, very
#'   low ELBO values do not flatten the plot (default: the first 10 percent).
#' @param ylim y limits; by default from the 2nd percentile of the ELBO after
#'   `skip` to its maximum, so that the approach to the optimum stays visible.
#' @param main,xlab,ylab passed to [graphics::plot()].
#' @param ... further arguments to [graphics::plot()].
#' @return `x`, invisibly.
#' @examples
#' fit <- svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy)
#' plot(fit)
#' @importFrom graphics plot lines abline legend
#' @method plot svi_fit
#' @export
plot.svi_fit <- function(x, window = NULL, skip = NULL, ylim = NULL, main = "ELBO trace",
                         xlab = "step", ylab = "ELBO", ...) {
  e <- as.double(x$elbo)
  steps <- seq_along(e)
  if (!length(e)) {
    cli::cli_abort("The fit has no ELBO trace to plot.", class = "svir_error", call = NULL)
  }
  if (is.null(window)) window <- x$control$eval_every %||% 100L
  window <- max(1L, min(as.integer(window), length(e)))
  if (is.null(skip)) skip <- floor(0.1 * length(e))
  keep <- steps > skip & is.finite(e)
  rm <- svir_running_mean(e, window)
  if (!any(keep)) keep <- is.finite(e)
  if (is.null(ylim)) {
    ylim <- c(stats::quantile(e[keep], 0.02, names = FALSE), max(c(e[keep], rm[keep]), na.rm = TRUE))
  }
  graphics::plot(steps[keep], e[keep], type = "l", col = "grey70", main = main,
                 xlab = xlab, ylab = ylab, ylim = ylim, ...)
  graphics::lines(steps[keep], rm[keep], col = "black", lwd = 2)
  lr <- x$engine$lr_steps
  if (length(lr)) graphics::abline(v = lr, lty = 2, col = "steelblue")
  graphics::legend("bottomright", bg = "white", box.col = "white",
                   legend = c("ELBO", sprintf("running mean (%d)", window),
                              if (length(lr)) "step size reduced"),
                   col = c("grey70", "black", if (length(lr)) "steelblue"),
                   lty = c(1, 1, if (length(lr)) 2), lwd = c(1, 2, if (length(lr)) 1))
  invisible(x)
}

# Trailing running mean over the finite values of the last `w` steps.
svir_running_mean <- function(e, w) {
  ok <- is.finite(e)
  v <- ifelse(ok, e, 0)
  cs <- cumsum(v)
  cn <- cumsum(ok)
  lag <- function(z) c(rep(0, w), z)[seq_along(z)]
  n <- cn - lag(cn)
  out <- (cs - lag(cs)) / n
  out[n == 0] <- NA
  out
}
