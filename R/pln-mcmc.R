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
#' The sampler runs in C, a thread per chain (about 0.5 ms an iteration for
#' 70 rows and 15 columns on the machine of `bench/README.md`), in blocks
#' of iterations with R's interrupt check and a progress bar between them. The fit's
#' `coef()`, `sigma()`, `vcov()`, `confint()` and [pln_sigma_posterior()]
#' then come from the draws; `fit$mcmc` holds them (`B`: draws x covariates
#' x columns; `Sigma`: draws x columns x columns), the acceptance rates,
#' and each parameter's effective sample size and split R-hat (from the
#' posterior package, when installed).
#'
#' @param object A fit with `family = pln(globals = "bayes")`, no `rank`
#'   and no minibatches; a full, diagonal or spherical covariance (the
#'   latter two get conjugate inverse-gamma steps, and a spherical one no
#'   scale moves).
#' @param iter Iterations of each chain, warm-up included. On vegan's
#'   mites (70 rows, 15 columns; `bench/pln_mcmc.R`, two threads) four
#'   chains of 10000 gave a smallest effective sample size of 77 to 150
#'   over the 1000 draws kept and a largest R-hat of 1.03 to 1.08, in
#'   about 10 s (NUTS: 861 and 1.005 in 361 s); a warning says when the
#'   first is under 100 or the second over 1.05.
#' @param warmup Iterations discarded at the start (a quarter by default).
#' @param chains Independent chains, run on threads of their own: the
#'   first starts at the fit's latent means, the others at draws from its
#'   `q(Z)`. R-hat compares them.
#' @param ndraws Draws kept over all chains (evenly thinned from each
#'   chain's iterations after the warm-up).
#' @param seed Seed of the sampler's random numbers (an integer); `NULL`
#'   draws one from R's generator.
#' @param tau The step of the scale moves, on the log scale; `0` turns them
#'   off.
#' @param threads Threads for the chains (at most `chains`); `NULL` for one
#'   per chain, within OpenMP's limit.
#' @param progress Show a progress bar.
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
pln_mcmc <- function(object, iter = 10000L, warmup = NULL, chains = 4L, ndraws = 1000L,
                     seed = NULL, tau = 0.25, threads = NULL, progress = interactive()) {
  svir_pln_check(object)
  if (!identical(object$globals, "bayes") || is.null(object$sigma_prior) ||
      !object$covariance %in% c("full", "diagonal", "spherical")) {
    cli::cli_abort(c("{.fn pln_mcmc} samples the posterior of {.code pln(globals = \"bayes\")} without {.arg rank}.",
                     i = "Refit with {.code family = pln(globals = \"bayes\")} and no {.arg rank}."),
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
  chains <- svir_check_whole(chains, "chains", 1L, 64L)
  per <- max(1L, min(svir_check_whole(ndraws, "ndraws", 1L) %/% chains, iter - warmup))
  if (!identical(tau, 0) && !identical(tau, 0L)) tau <- svir_check_real(tau, "tau", 0, 5)
  threads <- if (is.null(threads)) chains else svir_check_whole(threads, "threads", 1L)
  progress <- svir_check_flag(progress, "progress")
  if (is.null(seed)) seed <- sample.int(.Machine$integer.max, 1L)
  seed <- svir_check_whole(seed, "seed", 0L)
  thin <- (iter - warmup) %/% per
  n <- object$n
  p <- object$p
  if (as.double(n) * p > 1e7) {
    cli::cli_abort(c("{.fn pln_mcmc} keeps the {n} x {p} count table dense, which is too large here.",
                     i = "It is meant for tables of up to about 10^7 entries."),
                   class = "svir_error", call = NULL)
  }
  Y <- matrix(as.double(as.matrix(object$Y)), n, p)
  X <- matrix(as.double(object$X), n)
  d <- ncol(X)
  O <- if (is.null(object$offset)) matrix(0, n, p) else matrix(as.double(object$offset), n, p)
  ones <- svir_ones_column(X)
  B0 <- object$coefficients
  S0 <- svir_pln_Sigma(object)
  # chain 1 starts at the fit's latent means, the others at draws of q(Z)
  rng <- svir_sim_seed(seed)
  if (!is.null(rng$old)) on.exit(assign(".Random.seed", rng$old, envir = .GlobalEnv), add = TRUE)
  Zs <- vapply(seq_len(chains), function(c) {
    as.double(object$M) + if (c == 1L) 0 else as.double(object$S) * stats::rnorm(n * p)
  }, numeric(n * p))
  state <- list(Z = as.double(Zs), B = rep(as.double(B0), chains), Sigma = rep(as.double(S0), chains),
                xstep = rep(0, d * p * chains))
  cov <- match(object$covariance, c("full", "diagonal", "spherical")) - 1L
  # a spherical covariance's one variance has no per-column scale move
  if (cov == 2L) tau <- 0
  set <- list(nu0 = as.double(object$sigma_prior$df), s0 = as.double(object$sigma_prior$scale),
              cov = cov, a0 = as.double(object$sigma_prior$shape),
              icpt = if (is.na(ones)) -1L else ones - 1L, tau = as.double(tau),
              warmup = as.double(warmup), thin = as.integer(thin), seed = as.double(seed),
              chains = as.integer(chains), threads = as.integer(threads))
  # blocks of iterations, with R's interrupt check and the progress bar between them
  block <- max(50L, min(iter, as.integer(2e6 / (n * p^2 + 1))))
  Bk <- array(0, c(per, d * p, chains))
  Sk <- array(0, c(per, p * p, chains))
  kept <- integer(chains)
  cnt <- numeric(6)
  if (progress) pb <- cli::cli_progress_bar("pln_mcmc", total = iter)
  t0 <- proc.time()[[3]]
  for (it0 in seq(0L, iter - 1L, by = block)) {
    set$it0 <- as.double(it0)
    set$nit <- as.double(min(block, iter - it0))
    out <- .Call(C_svir_pln_mcmc_r, Y, X, O, state$Z, state$B, state$Sigma, state$xstep, set)
    state <- out[c("Z", "B", "Sigma", "xstep")]
    ld <- length(out$Bd) / (d * p * chains)
    Bd <- array(out$Bd, c(ld, d * p, chains))
    Sd <- array(out$Sd, c(ld, p * p, chains))
    for (c in seq_len(chains)) {
      k <- seq_len(min(out$nkept[c], per - kept[c]))
      if (length(k)) {
        Bk[kept[c] + k, , c] <- Bd[k, , c]
        Sk[kept[c] + k, , c] <- Sd[k, , c]
        kept[c] <- kept[c] + length(k)
      }
    }
    cnt <- cnt + rowSums(matrix(out$cnt, 6))
    if (progress) cli::cli_progress_update(id = pb, set = it0 + set$nit)
  }
  if (progress) cli::cli_progress_done(id = pb)
  secs <- proc.time()[[3]] - t0
  # draws x parameters, chains stacked; and iterations x chains per parameter
  nd <- per * chains
  Bm <- matrix(aperm(Bk, c(1, 3, 2)), nd)
  Sm <- matrix(aperm(Sk, c(1, 3, 2)), nd)
  Bd <- array(Bm, c(nd, d, p), dimnames = c(list(NULL), dimnames(B0)))
  Sd <- array(Sm, c(nd, p, p), dimnames = c(list(NULL), dimnames(S0)))
  flat <- cbind(Bm, Sm[, (seq_len(p) - 1L) * p + seq_len(p), drop = FALSE])
  ess <- rhat <- NULL
  if (requireNamespace("posterior", quietly = TRUE)) {
    ess <- apply(flat, 2, function(x) posterior::ess_bulk(matrix(x, per)))
    rhat <- apply(flat, 2, function(x) posterior::rhat(matrix(x, per)))
  }
  fit <- object
  fit$coefficients[] <- apply(Bd, c(2, 3), mean)
  fit$sigma <- apply(Sd, c(2, 3), mean)
  dimnames(fit$sigma) <- dimnames(S0)
  fit$mcmc <- list(B = Bd, Sigma = Sd, chains = chains,
                   accept = c(rows = cnt[1] / cnt[2], scale = cnt[3] / max(cnt[4], 1),
                              shift = cnt[5] / max(cnt[6], 1)),
                   iter = iter, warmup = warmup, thin = thin, seed = seed, tau = tau,
                   time = secs, ess_min = if (is.null(ess)) NA_real_ else min(ess),
                   rhat_max = if (is.null(rhat)) NA_real_ else max(rhat), ess = ess, rhat = rhat)
  if (is.finite(fit$mcmc$ess_min) && (fit$mcmc$ess_min < 100 || fit$mcmc$rhat_max > 1.05)) {
    cli::cli_warn(c("The chains' smallest effective sample size is {round(fit$mcmc$ess_min)} and their largest R-hat {format(round(fit$mcmc$rhat_max, 3), nsmall = 3)} (over {nd} draws kept).",
                    i = "Run more iterations ({.arg iter}) for steadier posterior means and intervals; {.code fit$mcmc$ess} and {.code fit$mcmc$rhat} have each parameter's."),
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
