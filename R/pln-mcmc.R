#' The exact posterior of a Poisson-lognormal fit's coefficients and covariance by MCMC
#'
#' `pln(globals = "bayes")` gives `B` and `Sigma` a variational posterior:
#' fast, and close to the exact one for columns with many non-zero counts,
#' but for a column absent from half the rows or more its means can sit a
#' posterior sd away and its intervals are too narrow (`dev/PLN.md`). This
#' samples the exact posterior under the same priors (`B` flat, `Sigma ~
#' inverse-Wishart(df, scale I)`, see [pln()]), started at the fit, by
#' Metropolis within Gibbs:
#'
#' * each latent row `Z_i` given `B` and `Sigma`: an independence
#'   Metropolis-Hastings step proposing from the Laplace approximation of
#'   its conditional (Newton's method from the current row);
#' * `Sigma` and `B` given `Z`, exactly (inverse-Wishart, then matrix
#'   normal);
#' * per column, moves along the ridges between the latent column and the
#'   globals that slow such samplers where counts are rare: the shift of
#'   the column with its intercept (drawn exactly), its shift along each
#'   other covariate with that coefficient, and the scale of its residuals
#'   with `Sigma`'s row and column (random-walk Metropolis).
#'
#' The sampler runs in C on one thread (about 0.5 ms an iteration for 70
#' rows and 15 columns on the machine of `bench/README.md`). The fit's
#' `coef()`, `sigma()`, `vcov()`, `confint()` and [pln_sigma_posterior()]
#' then come from the draws; `fit$mcmc` holds them (`B`: draws x covariates
#' x columns; `Sigma`: draws x columns x columns), the acceptance rates,
#' and each parameter's effective sample size and split R-hat (from the
#' posterior package, when installed).
#'
#' @param object A fit with `family = pln(globals = "bayes")`, a full
#'   covariance, no `rank` and no minibatches.
#' @param iter Iterations, warm-up included. On vegan's mites (70 rows, 15
#'   columns; `bench/pln_mcmc.R`) 20000 gave a smallest effective sample
#'   size of 51 to 63 over the 1000 draws kept, in about 10 s, and 40000
#'   one of 78 and 107 in two runs and 11 in a third, whose chain wandered
#'   in a rare species' variance (NUTS: 861 in 361 s); a warning says when
#'   it is under 100.
#' @param warmup Iterations discarded at the start (a quarter by default).
#' @param ndraws Draws kept (evenly thinned from the rest), at most
#'   `iter - warmup`.
#' @param seed Seed of the sampler's random numbers (an integer); `NULL`
#'   draws one from R's generator.
#' @param tau The step of the scale moves, on the log scale; `0` turns them
#'   off.
#' @return `object` with the draws in `$mcmc` and its posterior summaries
#'   replaced by the draws'.
#' @examples
#' \donttest{
#' set.seed(3)
#' d <- data.frame(x = rnorm(60))
#' d$Y <- matrix(rpois(240, exp(0.5 + 0.3 * d$x + rnorm(240, 0, 0.7))), 60)
#' fit <- svi_fit(Y ~ x, data = d, family = pln(globals = "bayes"))
#' fm <- pln_mcmc(fit, iter = 2000)
#' coef(fm)
#' pln_sigma_posterior(fm)
#' fm$mcmc$ess_min
#' }
#' @export
pln_mcmc <- function(object, iter = 20000L, warmup = NULL, ndraws = 1000L, seed = NULL,
                     tau = 0.25) {
  svir_pln_check(object)
  if (!identical(object$globals, "bayes") || is.null(object$sigma_prior) ||
      !identical(object$covariance, "full")) {
    cli::cli_abort(c("{.fn pln_mcmc} samples the posterior of {.code pln(globals = \"bayes\")} with a full covariance.",
                     i = "Refit with {.code family = pln(globals = \"bayes\")} (no {.arg rank}, {.code covariance = \"full\"})."),
                   class = "svir_error", call = NULL)
  }
  if (is.null(object$M)) {
    cli::cli_abort(c("{.fn pln_mcmc} starts from the fitted latent rows, which a minibatch fit does not keep.",
                     i = "Refit without {.arg batch_size}."),
                   class = "svir_error", call = NULL)
  }
  iter <- svir_check_whole(iter, "iter", 2L)
  warmup <- if (is.null(warmup)) iter %/% 4L else svir_check_whole(warmup, "warmup", 0L)
  if (warmup >= iter) {
    cli::cli_abort("{.arg warmup} ({warmup}) must be less than {.arg iter} ({iter}).",
                   class = "svir_error", call = NULL)
  }
  ndraws <- min(svir_check_whole(ndraws, "ndraws", 1L), iter - warmup)
  if (!identical(tau, 0) && !identical(tau, 0L)) tau <- svir_check_real(tau, "tau", 0, 5)
  if (is.null(seed)) seed <- sample.int(.Machine$integer.max, 1L)
  seed <- svir_check_whole(seed, "seed", 0L)
  thin <- (iter - warmup) %/% ndraws
  Y <- object$Y
  n <- object$n
  p <- object$p
  if (as.double(n) * p > 1e7) {
    cli::cli_abort(c("{.fn pln_mcmc} keeps the {n} x {p} count table dense, which is too large here.",
                     i = "It is meant for tables of up to about 10^7 entries."),
                   class = "svir_error", call = NULL)
  }
  Y <- matrix(as.double(as.matrix(Y)), n, p)
  X <- matrix(as.double(object$X), n)
  d <- ncol(X)
  O <- object$offset
  O <- if (is.null(O)) matrix(0, n, p) else if (is.matrix(O)) matrix(as.double(O), n, p)
       else matrix(as.double(O), n, p)
  ones <- which(vapply(seq_len(d), function(j) all(X[, j] == 1), TRUE))
  set <- list(nu0 = as.double(object$sigma_prior$df), s0 = as.double(object$sigma_prior$scale),
              icpt = if (length(ones)) ones[1] - 1L else -1L, tau = as.double(tau),
              iter = as.double(iter), warmup = as.double(warmup), thin = as.integer(thin),
              seed = as.double(seed))
  B0 <- object$coefficients
  S0 <- svir_pln_Sigma(object)
  t0 <- proc.time()[[3]]
  out <- .Call(C_svir_pln_mcmc_r, Y, X, O, matrix(as.double(object$M), n, p),
               matrix(as.double(B0), d, p), matrix(as.double(S0), p, p), set)
  secs <- proc.time()[[3]] - t0
  k <- seq_len(ndraws)
  Bd <- array(out$B[k, , drop = FALSE], c(ndraws, d, p), dimnames = c(list(NULL), dimnames(B0)))
  Sd <- array(out$Sigma[k, , drop = FALSE], c(ndraws, p, p), dimnames = c(list(NULL), dimnames(S0)))
  flat <- cbind(matrix(Bd, ndraws), vapply(seq_len(p), function(j) Sd[, j, j], numeric(ndraws)))
  ess <- rhat <- NULL
  if (requireNamespace("posterior", quietly = TRUE)) {
    ess <- apply(flat, 2, posterior::ess_bulk)
    rhat <- apply(flat, 2, posterior::rhat)
  }
  fit <- object
  fit$coefficients[] <- apply(Bd, c(2, 3), mean)
  fit$sigma <- apply(Sd, c(2, 3), mean)
  dimnames(fit$sigma) <- dimnames(S0)
  fit$mcmc <- list(B = Bd, Sigma = Sd, accept = stats::setNames(out$accept, c("rows", "scale", "shift")),
                   iter = iter, warmup = warmup, thin = thin, seed = seed, tau = tau,
                   time = secs, ess_min = if (is.null(ess)) NA_real_ else min(ess),
                   rhat_max = if (is.null(rhat)) NA_real_ else max(rhat), ess = ess, rhat = rhat)
  if (is.finite(fit$mcmc$ess_min) && fit$mcmc$ess_min < 100) {
    cli::cli_warn(c("The chain's smallest effective sample size is {round(fit$mcmc$ess_min)} (of {ndraws} draws kept).",
                    i = "Run more iterations ({.arg iter}) for steadier posterior means and intervals; {.code fit$mcmc$ess} has each parameter's."),
                  class = "svir_warning")
  }
  fit
}

# the draws of B as a matrix (draws x coefficients, named "covariate:column")
svir_pln_mcmc_B <- function(object) {
  Bd <- object$mcmc$B
  B <- object$coefficients
  m <- matrix(aperm(Bd, c(1, 3, 2)), dim(Bd)[1])
  colnames(m) <- paste(rep(rownames(B), each = ncol(B)), colnames(B), sep = ":")
  m
}
