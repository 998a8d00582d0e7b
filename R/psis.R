# Pareto smoothed importance sampling diagnostic (PSIS k-hat) for the guide.
#
# Vehtari, Simpson, Gelman, Yao & Gabry (2015/2024) "Pareto smoothed importance
# sampling"; Yao, Vehtari, Simpson & Gelman (2018) "Yes, but did it work?:
# evaluating variational inference". The generalized Pareto fit is the
# profile-likelihood / empirical-Bayes estimator of Zhang & Stephens (2009),
# with the weakly informative prior on k used by the loo package.

#' PSIS k-hat of importance ratios
#'
#' Fits a generalized Pareto distribution to the largest importance ratios
#' `exp(log_ratio)` and returns its shape estimate `k`. For a variational fit,
#' `log_ratio = log p(y, theta, z) - log q(theta, z)` evaluated on draws from
#' the guide `q`; k-hat below 0.5 means the guide covers the posterior well,
#' 0.5 to 0.7 is acceptable, and above 0.7 the importance ratios have such a
#' heavy tail that the guide is a poor fit for the joint posterior (Yao et al.
#' 2018).
#'
#' The tail has `M = ceiling(min(S / 5, 3 * sqrt(S)))` draws for `S` ratios.
#' The generalized Pareto is fitted to the exceedances over the largest
#' non-tail ratio by the method of Zhang & Stephens (2009), and the estimate is
#' shrunk towards 0.5 by a weakly informative prior worth 10 observations:
#' `k = (M * k + 10 * 0.5) / (M + 10)`, as in the loo package.
#'
#' @param log_ratio numeric vector of log importance ratios.
#' @return A number, the k-hat estimate, with attributes `tail_length` (M) and,
#'   when it is `NA`, `reason` (a sentence saying why it could not be
#'   computed).
#' @references
#' Zhang, J. & Stephens, M. A. (2009). A new and efficient estimation method for
#' the generalized Pareto distribution. *Technometrics* 51, 316--325.
#'
#' Yao, Y., Vehtari, A., Simpson, D. & Gelman, A. (2018). Yes, but did it work?:
#' Evaluating variational inference. *ICML*.
#' @examples
#' set.seed(1)
#' svir_psis_khat(rnorm(1000))              # light tail: small k
#' svir_psis_khat(log(1 / runif(1000)^0.8)) # Pareto tail with shape 0.8
#' @export
svir_psis_khat <- function(log_ratio) {
  na_k <- function(reason, M = NA_integer_) {
    structure(NA_real_, tail_length = M, reason = reason)
  }
  if (is.null(log_ratio) || length(log_ratio) == 0L)
    return(na_k("the engine returned no log importance ratios"))
  if (!is.numeric(log_ratio))
    return(na_k("the log importance ratios are not numeric"))
  log_ratio <- as.vector(log_ratio)
  bad <- !is.finite(log_ratio)
  if (any(bad & !(log_ratio %in% -Inf))) {
    return(na_k(sprintf("%d of %d log importance ratios are NA, NaN or +Inf",
                        sum(bad & !(log_ratio %in% -Inf)), length(log_ratio))))
  }
  # -Inf ratios are draws with zero weight: legitimate, they only shorten the
  # useful sample.
  S <- length(log_ratio)
  M <- as.integer(ceiling(min(0.2 * S, 3 * sqrt(S))))
  if (M < 5L) {
    return(na_k(sprintf("too few draws (%d) for a Pareto tail of at least 5", S), M))
  }
  lr <- sort.int(log_ratio) - max(log_ratio)
  tail <- lr[(S - M + 1L):S]
  cutoff <- lr[S - M]
  if (!is.finite(cutoff) && !is.finite(tail[1L])) {
    return(na_k("fewer than 5 log importance ratios are finite", M))
  }
  if (max(tail) - min(tail) < .Machine$double.eps / 100) {
    return(na_k("the largest importance ratios are all equal", M))
  }
  x <- exp(tail) - exp(cutoff)
  fit <- svir_gpd_fit(x)
  # the Pareto's scale too, for svir_psis_smooth() (R/laplace.R)
  structure(fit$k, tail_length = M, sigma = fit$sigma)
}

# Generalized Pareto fit by Zhang & Stephens (2009): a grid of values of
# theta = -k / sigma, weighted by the profile likelihood (a quadrature of the
# posterior mean of theta under their prior), then k from theta. `x` are
# nonnegative exceedances. Returns list(k, sigma).
svir_gpd_fit <- function(x, min_grid = 30L, prior_n = 10, prior_k = 0.5) {
  x <- sort.int(x)
  n <- length(x)
  m <- min_grid + floor(sqrt(n))
  j <- seq_len(m)
  x_q1 <- x[max(1L, floor(n / 4 + 0.5))]
  # grid of theta, dense near 1 / x_max (section 4 of Zhang & Stephens, prior 3)
  theta <- 1 / x[n] + (1 - sqrt(m / (j - 0.5))) / 3 / x_q1
  # profile log-likelihood of each theta: n * (log(-theta / k) - k - 1), with
  # k(theta) = mean(log1p(-theta * x))
  kt <- rowMeans(log1p(-outer(theta, x)))
  ll <- n * (log(-theta / kt) - kt - 1)
  w <- exp(ll - max(ll))
  w <- w / sum(w)
  theta_hat <- sum(theta * w)
  k <- mean(log1p(-theta_hat * x))
  sigma <- -k / theta_hat
  # weakly informative prior (loo): shrink towards 0.5 with weight 10
  k <- (n * k + prior_n * prior_k) / (n + prior_n)
  if (is.nan(k)) k <- Inf
  list(k = k, sigma = sigma)
}

# One-line reading of k-hat for print methods.
svir_khat_message <- function(khat, method = "svi") {
  if (is.null(khat) || is.na(khat)) {
    reason <- attr(khat, "reason")
    return(paste0("not available", if (!is.null(reason)) paste0(" (", reason, ")")))
  }
  # verdicts below 0.5, up to 0.7, above: of a guide, or of importance weights
  verdicts <- if (identical(method, "laplace")) {
    c("good: the importance weights are reliable",
      "ok: the importance weights are usable; tails may be slightly off",
      "the importance weights are unreliable")
  } else {
    c("good: the guide covers the joint posterior well",
      "ok: the guide is adequate; tails may be slightly off",
      "the guide is a poor fit for the joint posterior: treat intervals as approximate")
  }
  sprintf("%.2f (%s)", khat, verdicts[1L + (khat >= 0.5) + (khat > 0.7)])
}

# What to try when k-hat says the intervals are unreliable (summary(), and
# the warning of a fit), or NULL.
svir_trust_advice <- function(khat, method = "svi", laplace = NULL, guide = NULL) {
  if (identical(method, "laplace")) {
    km <- laplace$khat_marginal
    if (identical(laplace$weighting, "marginal") && !is.null(km) && is.finite(km) && km <= 0.7) {
      return(NULL)
    }
    if (is.null(khat) || is.na(khat) || khat <= 0.7) return(NULL)
    return(paste("Warning: the intervals may be unreliable (the importance weights have a heavy tail).",
                 "Try more draws (svi_control(is_draws = 16000)), or compare with method = \"svi\"."))
  }
  if (is.null(khat) || is.na(khat) || khat <= 0.7) return(NULL)
  # what to try: what this fit did not already use
  try <- c("method = \"laplace\" (small and medium models)",
           if (!identical(guide, "fullrank") && !identical(method, "qem")) "guide = \"fullrank\"",
           if (!identical(method, "qem")) "method = \"qem\"")
  paste0("Warning: the intervals may be too narrow (a Gaussian guide cannot follow this posterior). Try ",
         if (length(try) == 1L) try else paste0(paste(try[-length(try)], collapse = ", "), " or ",
                                                 try[length(try)]), ".")
}
