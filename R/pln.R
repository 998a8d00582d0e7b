# The Poisson-lognormal model for multivariate counts (dev/PLN.md): the
# family, its documentation, and the results' basic methods. Fitting is in
# R/pln-fit.R and R/pln-qem.R, the other methods in R/pln-methods.R.

#' The Poisson-lognormal family for multivariate counts
#'
#' `pln()` makes [svi_fit()] fit the Poisson-lognormal (PLN) model to a
#' matrix of counts, as PLNmodels does: for row `i` of an `n x p` count
#' matrix `Y` with covariates `X_i` (from the formula) and offsets `O_i`,
#' `Z_i ~ N(X_i B, Sigma)` and `Y_ij ~ Poisson(exp(O_ij + Z_ij))`.
#'
#' @section Fitting:
#' Each row gets a Gaussian `q(Z_i) = N(M_i, diag(S_i^2))`, whose expected
#' Poisson rate `exp(O_ij + M_ij + S_ij^2 / 2)` is known in closed form, so
#' the objective (the ELBO) has no Monte Carlo noise. `B` and `Sigma` are
#' point estimates (variational EM): for given `M` and `S` their optimum is
#' in closed form (`B` by least squares of `M` on `X`, `Sigma` from the
#' residuals and `S`), and the ELBO at that optimum is maximised over `M`
#' and `S` by L-BFGS in C, scaled by each entry's curvature, with the
#' gradient computed with BLAS. This is the objective PLNmodels maximises,
#' and the fit stops by PLNmodels' rule: when an iteration changes the ELBO
#' by less than `1e-6` of its value (`1e-8` when `n < 1.5 p`). The fit's
#' `trace` holds the ELBO after each iteration.
#'
#' `covariance = "full"` estimates all of `Sigma` (it needs more rows than
#' columns), `"diagonal"` one variance per column, `"spherical"` one
#' variance for all. With small counts the estimated covariances are
#' attenuated, because `q(Z_i)` has no correlations (the variances are not);
#' PLNmodels' estimates, from the same objective, share this.
#'
#' All-zero columns of `Y` are refused; all-zero rows are kept.
#'
#' @section Rank (PLN-PCA):
#' With `rank = q` the latent layer has `q` dimensions: `Z_i = X_i B + C
#' w_i` with factors `w_i ~ N(0, I_q)` and loadings `C` (`p x q`), so that
#' `Sigma = C C'` (PLNmodels' `PLNPCA`, pyPLNmodels' `PlnPCA`), for
#' ordination ([scores()]) and for many columns (`p` may exceed `n`). The
#' guide is over the factors, `q(w_i) = N(m_i, diag(s_i^2))`, and `B`, `C`,
#' the `m_i` and the `s_i` are optimised together by L-BFGS. The objective
#' runs over blocks of rows, so the fit holds `O(n q + p (q + d))` numbers
#' beyond the counts (no `n x p` array; `fitted()`, `ranef()` and
#' `predict()` compute `n x p` results when asked): an iteration costs
#' about `2 n p (8 q + 3 d)` flops and `n p` exponentials, sparse counts
#' included. The fit keeps `factors` (the `m_i` and `s_i`, `n x q`) and
#' `loadings` (`C`); `sigma()` forms `C C'` when called. `C` is identified
#' up to a rotation. `Sigma` has rank `q`, so [pln_cor()] gives no partial
#' correlations and `globals = "bayes"` is not available. PLN-PCA runs on
#' the CPU, in full batches, by variational EM. Its ELBO can have several
#' local maxima; the fit starts from one deterministic truncated SVD of the
#' log-counts' residuals (compare fits of different ranks, or with
#' `residual = TRUE`, by their ELBOs when in doubt).
#'
#' `residual = TRUE` fits the factor model `Sigma = W W' + diag(psi)`
#' instead (residual variances `psi`, `p q - q (q - 1) / 2 + p`
#' parameters), whose variational fit keeps a `p`-dimensional `q(Z_i)` per
#' row (`n x p` numbers) like the full covariance: `W` and `log(psi)` are
#' optimised jointly with `M` and `S`, `Sigma^-1` is applied by the
#' Woodbury identity and no `p x p` matrix is formed but the reported
#' `sigma()`. It runs in minibatches, by QEM and on the GPU, and takes
#' `globals = "bayes"`.
#'
#' @section The posterior of the coefficients and of Sigma:
#' `globals = "point"` (default) gives point estimates of `B` and `Sigma`
#' (variational EM, as PLNmodels). `globals = "bayes"` gives both a
#' posterior. `B` gets a flat prior and `Sigma` the conjugate
#' inverse-Wishart prior with `sigma_df` degrees of freedom (default `p +
#' 1`) and scale matrix `sigma_scale * I` (default `I`): with `p + 1`
#' degrees of freedom every correlation is uniform on `(-1, 1)` a priori
#' and every variance inverse-gamma with shape 1 and scale `sigma_scale / 2`
#' (median `0.72 sigma_scale`, a heavy right tail), weak on the scale of log
#' abundances. A diagonal covariance gives each variance that inverse-gamma
#' prior (shape `(sigma_df - p + 1) / 2`), a spherical one its one
#' variance. The posterior is `q(Z) q(B) q(Sigma)`: `q(Sigma)` is
#' inverse-Wishart with `n + sigma_df` degrees of freedom (inverse-gamma for
#' diagonal and spherical covariances), the conjugate posterior given the
#' latent layer's moments, with mean `K = (C + sigma_scale I) / (n - d +
#' sigma_df - p - 1)` (`C` the latent residuals' second moment; `(C + I) /
#' (n - d)` by default); `q(B)` is matrix normal with mean the least-squares
#' fit of `M` and covariance `K` between columns and `(X'X)^-1` between
#' covariates. The latent layer `q(Z)` is fitted with `Sigma` at its
#' posterior mean `K`, by the same L-BFGS as for point estimates. (The
#' mean-field optimum would use `E[Sigma^-1]`, which shrinks the latent
#' layer more and was further from NUTS.) [sigma()] gives `K`,
#' [pln_sigma_posterior()] the variances' posterior means, sds and
#' intervals, and [confint()] intervals for `B`; the fit's `elbo` is the
#' ELBO of these `q`s (priors and entropies included).
#'
#' How close this is to the exact posterior was measured against NUTS
#' (`bench/nuts/build_pln_ref.R`, `bench/README.md`) on vegan's mites (70
#' cores, the 15 most abundant species): the posterior means of `B` are
#' within 1 NUTS sd and those of the variances within 1.2, and within 0.5
#' and 1 for 10 of the 15 species. The misses are species absent from
#' half or more of the cores (Trimalc2, HMIN2, FSET, Trhypch1: 17 to 32 of
#' 70), whose latent values at the zero counts a Gaussian `q(Z)` describes
#' poorly, and NPRA's variance (1.2 NUTS sds high). The
#' posterior sds of the variances are narrower than NUTS's (ratios 0.2 to
#' 0.9), those of `B` too (0.3 to 0.9): read the intervals as too narrow
#' for rare columns. [pln_mcmc()] samples the exact posterior from such a
#' fit (about ten seconds on the mites, against NUTS's six minutes), after
#' which `coef()`, `sigma()`, `vcov()`, `confint()` and
#' [pln_sigma_posterior()] come from its draws.
#'
#' With `rank = q, residual = TRUE`, `globals = "bayes"` gives `B` its
#' Gaussian posterior (with `Sigma`'s estimate over `n - d` rows, as REML)
#' and keeps point estimates of `W` and `psi`.
#'
#' @section Sparse counts:
#' A sparse `Matrix` response (a `dgCMatrix`, e.g. a cells x genes count
#' matrix) is used as it is: the fit visits only its non-zero counts and
#' never forms the dense count matrix (the variational parameters `M` and
#' `S` are dense `n x p` matrices). Name it in the formula (`Y ~ x`, `Y` in
#' the calling environment); the covariates come from `data`, one row per
#' row of `Y`.
#'
#' @section Offsets:
#' `offset(log(depth))` in the formula, with one value per row (recycled
#' over the columns) or an `n x p` matrix; [pln_offsets()] computes the
#' usual ones (total counts, geometric-mean size factors).
#'
#' @section Bad input:
#' Negative, non-integer or missing counts, an offset of the wrong size or
#' with non-finite values, all-zero columns (their mean cannot be
#' estimated) and a full covariance with `p >= n` (use `rank`, `"diagonal"`
#' or `"spherical"`) are errors. All-zero rows are kept: their `M_i` go low,
#' as the offsets allow. Missing counts and offsets are errors; rows with
#' missing covariates go by `na.action`.
#'
#' @section Memory:
#' Full-batch fits with a full, diagonal or spherical covariance, or `rank`
#' with `residual = TRUE`, keep an `n x p` latent layer (`M` and `S`): they
#' need about 46 doubles per count (L-BFGS keeps gradients and five pairs
#' of updates of both), QEM about 18 (peak memory measured by
#' `dev/pln_memory.R` with `n = 20000`, `p = 300`, R's copies included).
#' Minibatch fits keep no latent layer: beyond the counts (and R's copies
#' of dense counts), one batch's work (about `40 m p` doubles for batches
#' of `m` rows) and sums of size `p x p`. PLN-PCA (`rank` alone) keeps
#' `n x q` factors: about 16 vectors of `2 n q + p (q + d)` numbers and
#' blocks of `2^18` entries, plus, for a dense response, `log(1 + Y)` for
#' the start. Before anything of that size is made, a fit that needs more
#' than 90% of the memory available (Linux's `MemAvailable`) is refused with
#' the size and what would fit; `options(svir.check_memory = FALSE)` turns
#' the check off.
#'
#' @section Minibatches:
#' With `control = svi_control(batch_size = m)` the fit visits the rows in
#' minibatches of `m`, in a new random order each epoch (`seed`), and keeps
#' no row's `q(Z_i)`: a step fits the batch's `q(Z_i)` afresh with `B` and
#' `Sigma` held (each entry's own optimum, then L-BFGS) and adds their
#' statistics (`X'M`, `M'M`, `sum S^2` and the local ELBO terms) to the
#' epoch's sums. `B` and `Sigma` come from sums over all rows (for `rank =
#' q, residual = TRUE`, a few factor-analysis EM iterations on them). In
#' the first epochs they are updated after every batch, from the last
#' epoch's sums with the visited rows' share replaced by theirs; once an
#' epoch raises the ELBO by less than `1e-4` of it, they are held through
#' each epoch and updated at its end from its exact sums, a step of
#' variational EM, which never lowers the ELBO; every third such epoch
#' starts from sums extrapolated from the two before (SQUAREM, Varadhan and
#' Roland 2008), kept only when it raises the ELBO. The ELBO after each epoch
#' (`trace`) is exact, for the epoch's `q(Z_i)` and the `B` and `Sigma`
#' fitted to them, and the fit's fixed points are the full-batch fit's. It
#' stops when what plain EM epochs would still gain, reckoned from the last
#' two (`g2 / (1 - g2 / g1)`), is less than the full-batch tolerance; `max_steps` counts minibatch steps. Methods that need `M` and
#' `S` ([fitted()], [ranef()], [pln_loglik()], [scores()], ICL in
#' [pln_criteria()]) fit them for all rows when called, with `B` and
#' `Sigma` held. Minibatches cost more time than a full-batch fit (every
#' epoch refits every row's `q(Z_i)` from scratch, and the fit takes tens
#' of epochs): use them when the full-batch fit does not fit in memory.
#' PLN-PCA fits run in full batches (they hold no `n x p` layer for
#' minibatches to save).
#'
#' @section QEM:
#' `svi_fit(..., family = pln(rank = q, residual = TRUE), method = "qem")`
#' fits the factor model as `Z_ij = X_i B_j + W_j u_i + e_ij` with factors `u_i ~ N(0, I_q)`
#' and entry effects `e_ij ~ N(0, psi_j)`, by importance sampling instead
#' of a variational bound: each iteration draws `K` (`svi_control(K = )`)
#' samples of every row's `u_i` and of every entry's `e_ij` from Gaussian
#' proposals, sums the importance weights over the tree rows > entries into
#' `log P-hat` (a `K`-sample lower bound on the log-likelihood), moves each
#' proposal towards its weighted posterior moments, and updates `B`, `W`
#' (a Newton step of each column's weighted Poisson regression) and `psi`.
#' It targets the likelihood rather than the ELBO, but its M step converges
#' at EM's rate: with small counts it is slow, and it may stop (on a plateau
#' of the noisy `log P-hat`) before the loadings have settled; compare with
#' the variational fit. `trace` holds
#' `log P-hat` per iteration and the fit's `elbo` its mean over the last 10;
#' `ess` the rows' effective sample sizes. An iteration costs `2 n p K^2`
#' exponentials. Where it was checked (n = 300, p = 40, mean counts about
#' 3, `q` = 1 to 8): the rows' effective sample sizes stayed above half of
#' `K = 16` for 90% of the rows up to `q = 8`, so the dimension was not the
#' limit there; the EM-rate convergence was, and QEM's `Sigma` was no more
#' accurate than the variational fit's at 130 to 1,300 times its time. At
#' counts around 30 the two agree. Dense counts, full batches, the CPU
#' only.
#'
#' `backend = "cuda"` runs the full-batch variational fit (every
#' covariance, and rank with `residual = TRUE`; dense or sparse counts) on
#' a CUDA GPU when
#' [svir_backends()] finds one: the same L-BFGS with its vectors and the
#' `n x p` work on the device, and the `p x p` (full) or `q x q` (rank)
#' factorisations on the CPU. It is written to agree with the CPU up to
#' the order of floating-point sums: its parity checks (whole fits to
#' `1e-6` relative) passed on an NVIDIA H200 through `tools/gpucheck`
#' (2026-12-04; `n = 10^5`, `p = 2000`, rank 10 took 1.9 s there). It is
#' meant for large `n p`; `backend = "auto"` fits `pln()` on the CPU.
#' Minibatches and `method = "qem"` run on the CPU only. The fit needs
#' about `300 n p` bytes of device memory (37 doubles per count with the
#' L-BFGS pairs and the data; `dev/CUDA.md`).
#'
#' @param rank `NULL` (a full, diagonal or spherical `Sigma`, see
#'   `covariance`), or the number of latent dimensions `q` (PLN-PCA:
#'   `Sigma = C C'`, with `q` factors per row); `covariance` is then
#'   ignored.
#' @param covariance `"full"`, `"diagonal"` or `"spherical"`.
#' @param globals `"point"` (variational EM point estimates of `B` and
#'   `Sigma`) or `"bayes"` (a posterior for `B` and `Sigma`).
#' @param sigma_df,sigma_scale With `globals = "bayes"` and no `rank`:
#'   the inverse-Wishart prior of `Sigma`, its degrees of freedom (more
#'   than `p - 1`; `NULL`, the default, is `p + 1`) and its scale matrix
#'   `sigma_scale * diag(p)` (see "The posterior of the coefficients and
#'   of Sigma").
#' @param residual With `rank`: `FALSE` (PLN-PCA, `Sigma = C C'`) or `TRUE`
#'   (the factor model `Sigma = W W' + diag(psi)`, whose fit keeps an
#'   `n x p` latent layer).
#' @return An object of class `"svir_pln_family"` for the `family` argument
#'   of [svi_fit()]. The fit is an object of class `"svi_pln"`; see
#'   [coef.svi_pln()].
#' @examples
#' set.seed(1)
#' n <- 200
#' x <- rnorm(n)
#' Z <- cbind(0.5 + 0.3 * x, 1 - 0.2 * x, 0.2) +
#'   matrix(rnorm(n * 3), n) %*% chol(matrix(c(1, 0.5, 0, 0.5, 1, 0.3, 0, 0.3, 1), 3))
#' d <- data.frame(x = x)
#' d$Y <- matrix(rpois(n * 3, exp(Z)), n, dimnames = list(NULL, c("a", "b", "c")))
#' fit <- svi_fit(Y ~ x, data = d, family = pln())
#' fit
#' coef(fit)
#' cov2cor(sigma(fit))
#' # PLN-PCA of rank 1
#' fit1 <- svi_fit(Y ~ x, data = d, family = pln(rank = 1))
#' sigma(fit1)
#' # a factor model with residual variances, and a posterior for B
#' fit2 <- svi_fit(Y ~ x, data = d, family = pln(rank = 1, residual = TRUE, globals = "bayes"))
#' confint(fit2)
#' @export
pln <- function(rank = NULL, covariance = c("full", "diagonal", "spherical"),
                globals = c("point", "bayes"), residual = FALSE, sigma_df = NULL,
                sigma_scale = 1) {
  covariance <- svir_match_arg(covariance, c("full", "diagonal", "spherical"), "covariance")
  globals <- svir_match_arg(globals, c("point", "bayes"), "globals")
  residual <- svir_check_flag(residual, "residual")
  if (!is.null(sigma_df)) sigma_df <- svir_check_real(sigma_df, "sigma_df")
  sigma_scale <- svir_check_real(sigma_scale, "sigma_scale")
  if (!is.null(rank)) {
    if (!is.numeric(rank) || length(rank) != 1L || !is.finite(rank) || rank < 1 ||
        rank != round(rank)) {
      cli::cli_abort(c("{.arg rank} must be a positive whole number (the latent dimensions) or {.code NULL}.",
                       x = "You supplied {.code {deparse1(rank)}}."),
                     class = "svir_error", call = NULL)
    }
    rank <- as.integer(rank)
    if (!residual && globals == "bayes") {
      cli::cli_abort(c("{.code globals = \"bayes\"} needs a positive-definite {.code Sigma}; PLN-PCA's {.code Sigma = C C'} has rank {rank}.",
                       i = "Use {.code pln(rank = {rank}, residual = TRUE, globals = \"bayes\")} (a factor model with residual variances)."),
                     class = "svir_error", call = NULL)
    }
  } else if (residual) {
    cli::cli_abort(c("{.code residual = TRUE} adds residual variances to a rank-q covariance.",
                     i = "Give {.arg rank}, e.g. {.code pln(rank = 3, residual = TRUE)}."),
                   class = "svir_error", call = NULL)
  }
  structure(list(family = "pln", model = "pln", rank = rank, covariance = covariance,
                 globals = globals, residual = !is.null(rank) && residual,
                 sigma_df = if (is.null(sigma_df)) NULL else as.double(sigma_df),
                 sigma_scale = as.double(sigma_scale)),
            class = c("svir_pln_family", "svir_model_family"))
}

#' @export
print.svir_pln_family <- function(x, ...) {
  cat(sprintf("Poisson-lognormal family (covariance: %s)\n", svir_pln_covname(x)))
  invisible(x)
}

svir_pln_covname <- function(x) {
  if (is.null(x$rank)) x$covariance else
    sprintf(if (isTRUE(x$residual)) "rank %d + diagonal" else "rank %d", x$rank)
}

# whether a family or a fit is PLN-PCA (rank q, no residual variances;
# src/models/pln/pln_pca.c): its latent layer is the n x q factors
svir_pln_is_pca <- function(x) !is.null(x$rank) && isFALSE(x$residual)

#' Results of a Poisson-lognormal fit
#'
#' Methods for fits of [svi_fit()] with `family = pln()`. `coef()` gives the
#' regression coefficients `B` (covariates x count columns), `sigma()` the
#' covariance matrix `Sigma` of the latent layer (`cov2cor(sigma(fit))` gives
#' the correlations), `fitted()` the expected counts
#' `exp(O + M + S^2 / 2)` under the fitted variational distributions.
#'
#' @param object,x A fit with `family = pln()` (class `"svi_pln"`).
#' @param ... Not used.
#' @return `coef()`: a matrix; `sigma()`: a `p x p` matrix; `fitted()`: an
#'   `n x p` matrix; `print()`: `x`, invisibly.
#' @examples
#' set.seed(2)
#' d <- data.frame(x = rnorm(100))
#' d$Y <- matrix(rpois(300, exp(1 + 0.5 * d$x)), 100)
#' fit <- svi_fit(Y ~ x, data = d, family = pln(covariance = "diagonal"))
#' coef(fit)
#' diag(sigma(fit))
#' head(fitted(fit))
#' @name coef.svi_pln
#' @export
coef.svi_pln <- function(object, ...) object$coefficients

#' @rdname coef.svi_pln
#' @export
sigma.svi_pln <- function(object, ...) svir_pln_Sigma(object)

#' @rdname coef.svi_pln
#' @export
fitted.svi_pln <- function(object, ...) {
  lat <- svir_pln_latent(object)
  eta <- lat$M + lat$S^2 / 2
  if (!is.null(object$offset)) eta <- eta + object$offset
  exp(eta)
}

#' @rdname coef.svi_pln
#' @export
print.svi_pln <- function(x, ...) {
  qem <- identical(x$method, "qem")
  cat(sprintf("Poisson-lognormal model fitted by %s (svir), covariance: %s%s\n",
              if (qem) sprintf("QEM (K = %d)", x$K) else "variational EM",
              svir_pln_covname(x),
              if (!identical(x$globals, "bayes")) "" else
                if (is.null(x$sigma_post)) ", Gaussian posterior for B" else
                  ", posterior for B and Sigma"))
  how <- if (is.null(x$batch_size)) sprintf("%d iterations", x$steps) else
    sprintf("%d minibatch steps (%d epochs of %d-row batches)", x$steps, x$epochs, x$batch_size)
  cat(sprintf("  %d rows x %d count columns; %s %.2f after %s (%s), %.2f s\n",
              x$n, x$p, if (qem) "log P-hat" else "ELBO", x$elbo, how, x$stop_reason, x$time))
  if (!is.null(x$mcmc)) {
    mc <- x$mcmc
    cat(sprintf("  B and Sigma from MCMC (pln_mcmc): %d chains of %d iterations (%d warm-up), %d draws, acceptance %.2f (rows) and %.2f (scale moves); smallest ESS %.0f, largest R-hat %.3f; %.1f s\n",
                mc$chains, mc$iter, mc$warmup, dim(mc$B)[1], mc$accept[["rows"]],
                mc$accept[["scale"]], mc$ess_min, mc$rhat_max, mc$time))
  }
  cat("Coefficients (first columns):\n")
  print(signif(x$coefficients[, seq_len(min(6L, x$p)), drop = FALSE], 4))
  invisible(x)
}

#' Correlations between the count columns of a Poisson-lognormal fit
#'
#' The correlations of the latent layer `Z` of a fit with `family = pln()`:
#' `cov2cor(sigma(fit))`, or with `partial = TRUE` the partial correlations
#' (each pair given all other columns), `-Omega_jk / sqrt(Omega_jj
#' Omega_kk)` with `Omega = Sigma^-1`: the edges of the Gaussian graphical
#' model of the latent layer, zero where two columns are conditionally
#' independent.
#'
#' @param object A fit with `family = pln()` (class `"svi_pln"`).
#' @param partial `FALSE` (default) for correlations, `TRUE` for partial
#'   correlations.
#' @return A `p x p` correlation matrix with the columns' names.
#' @examples
#' set.seed(3)
#' d <- data.frame(x = rnorm(150))
#' S <- matrix(c(1, 0.6, 0.3, 0.6, 1, 0.5, 0.3, 0.5, 1), 3)
#' Z <- 1 + matrix(rnorm(450), 150) %*% chol(S)
#' d$Y <- matrix(rpois(450, exp(Z)), 150, dimnames = list(NULL, c("a", "b", "c")))
#' fit <- svi_fit(Y ~ x, data = d, family = pln())
#' pln_cor(fit)
#' pln_cor(fit, partial = TRUE)
#' @export
pln_cor <- function(object, partial = FALSE) {
  if (!inherits(object, "svi_pln")) {
    cli::cli_abort("{.arg object} must be a fit with {.code family = pln()}.",
                   class = "svir_error", call = NULL)
  }
  partial <- svir_check_flag(partial, "partial")
  S <- svir_pln_Sigma(object)
  if (!partial) return(stats::cov2cor(S))
  if (svir_pln_is_pca(object)) {
    cli::cli_abort(c("PLN-PCA's {.code Sigma = C C'} has rank {object$rank}, less than {object$p}: it has no inverse, so no partial correlations.",
                     i = "Fit {.code pln(rank = {object$rank}, residual = TRUE)}, or a full covariance."),
                   class = "svir_error", call = NULL)
  }
  P <- -stats::cov2cor(solve(S))
  diag(P) <- 1
  dimnames(P) <- dimnames(S)
  P
}

#' Intervals for the coefficients of a Poisson-lognormal fit
#'
#' For a fit with `family = pln(globals = "bayes")`, the central intervals
#' of the Gaussian posterior of each coefficient `B_kj`: its mean is the
#' estimate and its variance `[(X'X)^-1]_kk Sigma_jj`. After [pln_mcmc()],
#' the quantiles of its draws.
#'
#' @param object A fit with `family = pln(globals = "bayes")`.
#' @param parm Covariates (names or indices of `rownames(coef(object))`);
#'   all by default.
#' @param level The intervals' probability.
#' @param ... Not used.
#' @return A matrix with a row per coefficient, named `"covariate:column"`,
#'   and the lower and upper limits in columns named like `confint.lm()`'s.
#' @examples
#' set.seed(4)
#' d <- data.frame(x = rnorm(100))
#' d$Y <- matrix(rpois(300, exp(1 + 0.5 * d$x)), 100)
#' fit <- svi_fit(Y ~ x, data = d, family = pln(covariance = "diagonal", globals = "bayes"))
#' confint(fit)
#' @export
confint.svi_pln <- function(object, parm, level = 0.95, ...) {
  if (is.null(object$XtXinv)) {
    cli::cli_abort(c("Intervals need the coefficients' posterior, which this fit does not have.",
                     i = "Refit with {.code family = pln(globals = \"bayes\")}."),
                   class = "svir_error", call = NULL)
  }
  a <- svir_probs(level, "level")[1]
  B <- object$coefficients
  k <- seq_len(nrow(B))
  if (!missing(parm)) {
    k <- if (is.character(parm)) match(parm, rownames(B)) else parm
    if (anyNA(k) || any(k < 1 | k > nrow(B))) {
      cli::cli_abort("{.arg parm} must name covariates among {.val {rownames(B)}}.",
                     class = "svir_error", call = NULL)
    }
  }
  if (!is.null(object$mcmc)) {
    # pln_mcmc(): the draws' quantiles
    m <- svir_pln_mcmc_B(object)
    cols <- as.vector(outer(seq_len(ncol(B)), (k - 1L) * ncol(B), "+"))
    out <- t(apply(m[, cols, drop = FALSE], 2, stats::quantile, probs = c(a, 1 - a), names = FALSE))
    dimnames(out) <- list(colnames(m)[cols], svir_pct_names(c(a, 1 - a)))
    return(out)
  }
  se <- sqrt(outer(diag(object$XtXinv), diag(svir_pln_Sigma(object))))[k, , drop = FALSE]
  est <- B[k, , drop = FALSE]
  z <- stats::qnorm(1 - a)
  out <- cbind(as.vector(t(est - z * se)), as.vector(t(est + z * se)))
  dimnames(out) <- list(paste(rep(rownames(est), each = ncol(B)), colnames(B), sep = ":"),
                        svir_pct_names(c(a, 1 - a)))
  out
}

#' Offsets for count matrices
#'
#' The usual offsets for [pln()] models, on the log scale, one per row, for
#' `offset()` in the formula: `"total"`, the log of each row's total count
#' (PLNmodels' "TSS"); `"rle"`, the log of the geometric-mean size factors
#' of DESeq2 (each row's median ratio to the columns' geometric means), in
#' the variant for sparse data ("poscounts"): the geometric means and the
#' medians use the positive counts only, so columns and rows with zeros
#' still count. The size factors are scaled to a geometric mean of 1.
#' Dense matrices and sparse `dgCMatrix` ones are accepted; a sparse one is
#' not densified.
#'
#' @param Y A count matrix (rows: samples or cells; columns: species or
#'   genes), dense or a `Matrix::dgCMatrix`.
#' @param type `"total"` or `"rle"`.
#' @return A numeric vector of length `nrow(Y)`, the log offsets.
#' @examples
#' Y <- matrix(rpois(60, 5), 10)
#' pln_offsets(Y)
#' pln_offsets(Y, "rle")
#' @export
pln_offsets <- function(Y, type = c("total", "rle")) {
  type <- svir_match_arg(type, c("total", "rle"), "type")
  sparse <- isS4(Y) && methods::is(Y, "Matrix")
  if (sparse) {
    if (!methods::is(Y, "dgCMatrix")) {
      Y <- methods::as(methods::as(methods::as(Y, "CsparseMatrix"), "generalMatrix"), "dMatrix")
    }
    x <- Y@x
    row <- Y@i + 1L
    col <- rep.int(seq_len(ncol(Y)), diff(Y@p))
  } else {
    if (is.data.frame(Y)) Y <- as.matrix(Y)
    if (!is.matrix(Y) || !is.numeric(Y)) {
      cli::cli_abort("{.arg Y} must be a numeric count matrix or a sparse {.cls dgCMatrix}.",
                     class = "svir_error", call = NULL)
    }
    nz <- which(Y != 0)
    x <- as.double(Y[nz])
    row <- (nz - 1L) %% nrow(Y) + 1L
    col <- (nz - 1L) %/% nrow(Y) + 1L
  }
  if (any(!is.finite(x)) || any(x < 0)) {
    cli::cli_abort("{.arg Y} must hold non-negative counts.", class = "svir_error", call = NULL)
  }
  keep <- x > 0
  x <- x[keep]
  row <- row[keep]
  col <- col[keep]
  n <- nrow(Y)
  empty <- setdiff(seq_len(n), row)
  if (length(empty)) {
    cli::cli_abort(c("Rows {.val {empty[seq_len(min(5L, length(empty)))]}} ({length(empty)} in all) have no counts, so they have no offset.",
                     i = "Drop the empty rows before fitting."),
                   class = "svir_error", call = NULL)
  }
  out <- if (type == "total") {
    log(as.vector(rowsum(x, row, reorder = TRUE)))
  } else {
    lg <- as.vector(rowsum(log(x), col, reorder = TRUE)) / tabulate(col)
    lgm <- numeric(ncol(Y))
    lgm[sort(unique(col))] <- lg
    ratio <- log(x) - lgm[col]
    s <- log(vapply(split(exp(ratio), row), stats::median, 0))
    s - mean(s)
  }
  names(out) <- rownames(Y)
  out
}


#' The posterior of the latent variances of a Poisson-lognormal fit
#'
#' For a fit with `family = pln(globals = "bayes")` (without `rank`),
#' `q(Sigma)` is inverse-Wishart (inverse-gamma for a diagonal or spherical
#' covariance; see [pln()], "The posterior of the coefficients and of
#' Sigma"), so each variance `Sigma_jj` has an inverse-gamma posterior.
#' This gives its mean, sd and central interval; after [pln_mcmc()], those
#' of its draws.
#'
#' @param object A fit with `family = pln(globals = "bayes")`.
#' @param level The intervals' probability.
#' @return A data frame with a row per count column: `mean`, `sd` (`NA`
#'   where the inverse-gamma's shape is 2 or less) and the interval's
#'   limits, named like [confint()]'s columns; the prior in the attribute
#'   `"prior"` (`df`, `scale`).
#' @examples
#' set.seed(4)
#' d <- data.frame(x = rnorm(100))
#' d$Y <- matrix(rpois(300, exp(1 + 0.5 * d$x + rnorm(300, 0, 0.5))), 100)
#' fit <- svi_fit(Y ~ x, data = d, family = pln(globals = "bayes"))
#' pln_sigma_posterior(fit)
#' @export
pln_sigma_posterior <- function(object, level = 0.95) {
  if (!inherits(object, "svi_pln")) {
    cli::cli_abort("{.arg object} must be a fit with {.code family = pln()}.",
                   class = "svir_error", call = NULL)
  }
  if (is.null(object$sigma_post)) {
    cli::cli_abort(c("This fit has a point estimate of {.code Sigma}, with no posterior.",
                     i = "Refit with {.code family = pln(globals = \"bayes\")} and no {.arg rank}."),
                   class = "svir_error", call = NULL)
  }
  al <- svir_probs(level, "level")[1]
  if (!is.null(object$mcmc)) {
    # pln_mcmc(): the draws
    v <- vapply(seq_len(object$p), function(j) object$mcmc$Sigma[, j, j], numeric(dim(object$mcmc$Sigma)[1]))
    out <- data.frame(mean = colMeans(v), sd = apply(v, 2, stats::sd),
                      lo = apply(v, 2, stats::quantile, probs = al, names = FALSE),
                      hi = apply(v, 2, stats::quantile, probs = 1 - al, names = FALSE),
                      row.names = colnames(object$coefficients))
    names(out)[3:4] <- svir_pct_names(c(al, 1 - al))
    attr(out, "prior") <- object$sigma_prior[c("df", "scale")]
    return(out)
  }
  q <- object$sigma_post
  a <- q$shape
  b <- q$rate
  out <- data.frame(mean = b / (a - 1),
                    sd = ifelse(a > 2, b / ((a - 1) * sqrt(pmax(a - 2, 0))), NA_real_),
                    lo = b / stats::qgamma(1 - al, shape = a, rate = 1),
                    hi = b / stats::qgamma(al, shape = a, rate = 1),
                    row.names = colnames(object$coefficients))
  names(out)[3:4] <- svir_pct_names(c(al, 1 - al))
  attr(out, "prior") <- object$sigma_prior[c("df", "scale")]
  out
}
