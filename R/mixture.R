# Count mixtures (issue 17): family = count_mixture(). The model and its
# engine are in src/models/mixture/ (mix_model.h).

#' Count mixture family for count matrices
#'
#' A mixture of count distributions over the rows of a count matrix (cells
#' or samples by genes or taxa), for [svi_fit()]:
#' `svi_fit(Y ~ batch + offset(log(size_factor)), data, family =
#' count_mixture(K = 8))`. Each row has a cluster label `z_i ~
#' Categorical(pi)`, `pi ~ Dirichlet(alpha)`, and given `z_i = k` each count
#' is Poisson or negative binomial with mean `exp(o_i + x_i gamma_j +
#' mu_kj)`: `o_i` the row's offset, `x_i` its covariates (the formula's
#' right-hand side without its intercept, less their means over the rows;
#' effects `gamma_j` per column of `Y` shared by the clusters), and cluster
#' log-means at the average covariates `mu_kj ~ N(m_j,
#' tau_j^2)` shrunk towards a column mean, so that a small cluster's means
#' are not taken from a few rows alone. The negative binomial has a
#' dispersion `phi_j` per column (variance `mu + mu^2 / phi`).
#'
#' The labels are summed out exactly (a log-sum-exp over the `K` clusters of
#' each row); SVI fits a mean-field Gaussian guide over the unconstrained
#' global parameters, in minibatches of rows for large matrices. Each of
#' `nstart` starts comes from k-means++ on the principal components of the
#' log-normalised counts; the start with the best final ELBO is kept and the
#' others are reported (`fit$starts`). Clusters are numbered by size, the
#' largest first.
#'
#' With several `K` (`K = 2:8`), each is fitted in turn and the fit with
#' the largest ELBO (each fit's final ELBO plus `log(K!)`, the relabellings
#' its guide cannot hold) is returned, with the table of criteria in
#' `fit$criteria`. The ELBO is a lower bound on each K's marginal
#' likelihood: the shrinkage of the cluster means charges for extra clusters
#' as much as they are worth, where BIC and ICL (also in the table) count
#' every cluster mean as a free parameter. On 5000 x 1000 counts of 8
#' simulated clusters, the ELBO peaked at K = 8 while BIC and ICL chose 6
#' (`bench/mixture.R`). A held-out ELBO would need a refit per fold.
#'
#' With `background` (negative binomial clusters only; for CITE-seq protein
#' counts, the idea of totalVI), each count is either foreground, the
#' cluster's negative binomial, with probability `1 - beta_j`, or
#' background, a negative binomial `NB(exp(b_j), psi_j)` per column shared
#' by all rows. The background takes no offsets or covariates: ambient
#' counts in a droplet do not scale with its cell's library. Given the
#' counts of empty droplets (`background = empty_counts`, a matrix with the
#' same columns), the priors of `b_j` and `log psi_j` are normal around
#' their maximum-likelihood estimates from the empty droplets (sd: the
#' estimate's standard error and 0.25 in quadrature); with `background =
#' TRUE`, `b_j ~ N(log of the mean of the column's lowest quarter of counts,
#' 1)` and `psi_j` has `phi_j`'s prior. `logit beta_j ~ N(0, 1.5^2)`. The fit
#' holds each count's posterior probability of being foreground
#' (`fit$foreground`, rows x columns) and the background's posterior means
#' (`fit$background`).
#'
#' `method = "qem"` (not for `"dirmult"`, and with full batches only): the
#' same family of approximations, fitted by importance weighting and moment
#' matching. Each iteration draws `K` samples (`svi_control(K = )`) of one
#' block of parameters in turn (the cluster log-means, the dispersions, the
#' covariates' effects, the zero inflation, the background's parts), the
#' others held at their means; the labels take their exact categorical
#' probabilities, `pi` its Dirichlet, and each coordinate the weighted mean
#' and variance of its samples by a moving average. An iteration costs `K +
#' 1` passes over the counts. Its trace is the log joint density at the
#' approximation's means; its final ELBO (for choosing `K` clusters) is
#' SVI's estimate at the final approximation, with 10 draws, so the two
#' methods' criteria compare. Posterior draws of `pi` are logistic-normal
#' with the Dirichlet's log-ratio moments.
#'
#' In this version both methods run on the CPU; CUDA is not built yet for
#' count mixtures (issue 17).
#'
#' Priors: `m_j ~ N(log of the column's mean rate, 2.5^2)`, `tau_j ~ N+(0,
#' 1)`, `gamma ~ N(0, 2.5^2)`, `phi_j^(-1/2) ~ N+(0, 1)`, `logit omega_j ~
#' N(-2, 2^2)`, `pi ~ Dirichlet(alpha)`.
#'
#' @param K The number of clusters, at least 1, or several (e.g. `1:8`)
#'   to choose from by the ELBO.
#' @param dist `"nb"` (negative binomial, the default), `"poisson"`, or
#'   `"zinb"` (zero-inflated negative binomial: a count is a structural zero
#'   with probability `omega_j` per column, else the cluster's NB; the
#'   posterior means of `omega_j` are in `fit$zero_inflation`), or
#'   `"dirmult"` (each row Dirichlet-multinomial with cluster concentrations
#'   `alpha_kj = exp(mu_kj)`, as in DirichletMultinomial; it conditions on
#'   the row's total, so it takes no covariates or offsets, and `coef()`
#'   gives the log expected proportions `log(alpha_kj / sum_j alpha_kj)`).
#' @param alpha The Dirichlet prior's concentration on the weights.
#' @param nstart Starts (k-means++ on principal components); the best by
#'   final ELBO is kept.
#' @param background `NULL` (no background), `TRUE` (a background per
#'   column, its priors from the counts themselves) or a matrix (dense or
#'   `dgCMatrix`) of empty droplets' counts with the count matrix's columns
#'   (matched by name when both have names), from which the background's
#'   priors are learned. Needs `dist = "nb"`.
#' @return An object of class `"svir_model_family"` for [svi_fit()].
#' @seealso [clusters()], [coef.svi_mixture()], [predict.svi_mixture()],
#'   [markers()].
#' @examples
#' set.seed(1)
#' mu <- rbind(rep(c(2, 0), c(10, 10)), rep(c(0, 2), c(10, 10)))
#' z <- rep(1:2, c(60, 40))
#' Y <- matrix(rpois(100 * 20, exp(mu[z, ])), 100)
#' fit <- svi_fit(Y ~ 1, family = count_mixture(K = 2, dist = "poisson"), seed = 1)
#' table(clusters(fit), z)
#' @export
count_mixture <- function(K = 8, dist = c("nb", "poisson", "zinb", "dirmult"), alpha = 1, nstart = 3,
                          background = NULL) {
  abort <- function(msg, .envir = parent.frame()) {
    cli::cli_abort(msg, class = "svir_error", call = NULL, .envir = .envir)
  }
  if (!is.numeric(K) || anyNA(K) || any(K != round(K)) || any(K < 1)) {
    abort("{.arg K} must be a whole number of clusters, at least 1.")
  }
  if (anyDuplicated(K)) abort("{.arg K} has repeated values.")
  K <- sort(K)
  if (!is.character(dist) || !all(dist %in% names(svir_codes$mix_dist))) {
    abort(c("{.arg dist} must be {.or {.val {names(svir_codes$mix_dist)}}} in this version.",
            x = "You supplied {.val {dist}}."))
  }
  dist <- match.arg(dist)
  if (!is.numeric(alpha) || length(alpha) != 1L || !is.finite(alpha) || alpha <= 0) {
    abort("{.arg alpha} must be one positive number.")
  }
  if (!is.numeric(nstart) || length(nstart) != 1L || !is.finite(nstart) || nstart < 1 ||
      nstart != round(nstart)) {
    abort("{.arg nstart} must be a whole number of starts, at least 1.")
  }
  if (!is.null(background)) {
    if (dist != "nb") {
      abort(c("{.arg background} needs negative binomial clusters.",
              i = "Use {.code dist = \"nb\"} with a background."))
    }
    if (!isTRUE(background)) {
      bx <- if (inherits(background, "dgCMatrix")) background@x else background
      if (!(is.matrix(background) || inherits(background, "dgCMatrix")) || !is.numeric(bx) ||
          nrow(background) < 2L || anyNA(bx) || any(bx < 0 | bx != round(bx))) {
        abort(c("{.arg background} must be {.code TRUE} or a matrix of empty droplets' counts (non-negative whole numbers, at least 2 rows).",
                i = "Its columns are the count matrix's (e.g. the same antibodies)."))
      }
    }
  }
  structure(list(model = "mixture", family = "count_mixture", K = as.integer(K), dist = dist,
                 alpha = as.double(alpha), nstart = as.integer(nstart), background = background),
            class = "svir_model_family")
}

# svi_fit() for count_mixture(): the counts and covariates (read as pln()
# reads them), the starts, the engine's spec.
svir_mix_build <- function(formula, data, family, prior, guide, method, control, backend, seed,
                           na.action, call, guide_given = FALSE) {
  abort <- function(msg, .envir = parent.frame()) {
    cli::cli_abort(msg, class = "svir_error", call = call, .envir = .envir)
  }
  if (!method %in% c("auto", "svi", "qem")) {
    abort(c("{.fn count_mixture} is fitted by SVI or QEM ({.code method = \"{method}\"} is not built for it).",
            i = "Use {.code method = \"svi\"} (the default) or {.code \"qem\"}."))
  }
  if (method == "auto") method <- "svi"
  if (method == "qem" && family$dist == "dirmult") {
    abort(c("{.code method = \"qem\"} is not built for {.code dist = \"dirmult\"}: a Dirichlet-multinomial row does not split into entries, which QEM's updates weigh one by one.",
            i = "Use {.code method = \"svi\"} for Dirichlet-multinomial clusters."))
  }
  if (method == "qem" && !is.null(control$batch_size)) {
    abort(c("{.code method = \"qem\"} takes full batches: each iteration passes over every row.",
            i = "Leave {.arg batch_size} out of {.fn svi_control}, or use {.code method = \"svi\"} for minibatches."))
  }
  if (identical(guide, "fullrank")) {
    abort(c("{.fn count_mixture} takes the mean-field guide: a full-rank guide over {.code K x p} cluster means would not fit in memory for a count matrix.",
            i = "Leave {.arg guide} out."))
  }
  if (!is.null(prior)) cli::cli_warn("{.arg prior} is not used by {.fn count_mixture} fits (see {.help count_mixture} for its priors).")
  be <- svir_choose_backend(backend, model = "mixture", method = method,
                            minibatch = !is.null(control$batch_size),
                            spec = list(dist = svir_codes$mix_dist[[family$dist]]), call = call)
  dat <- svir_mix_data(formula, data, na.action, abort)
  n <- dat$n
  p <- dat$p
  K <- family$K
  if (n < 2L * max(K)) abort("The count matrix has {n} row{?s}: too few for {max(K)} clusters.")
  if (family$dist == "dirmult" && (dat$dx > 0 || !is.null(dat$O))) {
    abort(c("{.code count_mixture(dist = \"dirmult\")} takes no covariates or offsets: the Dirichlet-multinomial conditions on each row's total.",
            i = "Use {.code Y ~ 1}, or {.code dist = \"nb\"} for covariates and size factors."))
  }
  # the column means' rates (for dirmult, log(p x the column's share): a
  # concentration of 1 per column on average), for m_j's prior and the starts
  o <- if (is.null(dat$O)) rep(0, n) else dat$O
  colsum <- if (dat$sparse) Matrix::colSums(dat$Y) else colSums(dat$Y)
  m_loc <- if (family$dist == "dirmult") log((colsum + 0.1) / sum(colsum + 0.1) * p) else
    log((colsum + 0.1) / sum(exp(o)))
  bgpri <- if (!is.null(family$background)) svir_mix_bg_prior(family$background, dat, abort)
  spec <- svir_mix_spec(dat, family, K[1], m_loc, bgpri)
  dx <- dat$dx
  # minibatches of rows by default when a full pass is large: 64 to 256
  # rows, about 2e5 densities a step. At 1500 x 300 x 4, 100 rows took
  # 5.9 s against full batches' 44 s, and at 5000 x 1000 x 8, 64 rows
  # 21 s against 223 rows' 35 s, the same clusters (dev/MIXTURE.md)
  if (method == "svi" && is.null(control$batch_size) && as.double(n) * p * max(K) > 2e6) {
    control$batch_size <- as.integer(min(256, max(64, ceiling(2e5 / (as.double(p) * max(K))))))
  }
  if (!is.null(control$batch_size) && control$batch_size >= n) control$batch_size <- NULL
  pcs <- svir_mix_pcs(dat$Y, o)
  starts <- svir_mix_starts(dat$Y, o, pcs, dat$dx, family, K[1], seed, m_loc, bgpri)
  if (is.null(control$num_particles)) control$num_particles <- 1L
  ctrl <- svir_engine_ctrl(control, "meanfield", seed, backend, method)
  if (method == "qem") {
    # the rolling rule on the trace (the mean of the last 10 iterations
    # against the 10 before, after 30), as the Poisson-lognormal's QEM
    ctrl[c("rule", "eval_every", "min_steps", "qem_eta0", "qem_kappa")] <-
      list("rolling", 10L, if (is.null(control$qem_min_iter)) 30 else control$qem_min_iter, 0.5, 0.6)
  }
  spec$init_mu <- starts[[1]]
  job <- list(spec = spec, ctrl = ctrl, control = control, method = method, guide = "meanfield",
              backend = be, seed = seed, starts = starts, family = family, call = call,
              cn = dat$cn, rn = dat$rn, n = n, p = p, K = K[1], dx = dx, xnames = colnames(dat$X),
              formula = formula, tt = dat$tt, xlevels = dat$xlevels, xbar = dat$xbar, m_loc = m_loc,
              bg_prior = bgpri)
  # the other K: the same data and settings, their own spec and starts
  job$other_K <- lapply(K[-1L], function(k) {
    j <- job
    j$K <- k
    j$spec <- svir_mix_spec(dat, family, k, m_loc, bgpri)
    j$starts <- svir_mix_starts(dat$Y, o, pcs, dat$dx, family, k, seed, m_loc, bgpri)
    j$spec$init_mu <- j$starts[[1]]
    j
  })
  job
}

# The counts, covariates and offsets of formula in data (read as pln()
# reads them): Y (dense, or a dgCMatrix), X (the model matrix without its
# intercept, less its column means `xbar`), O (or NULL), the names, the
# terms and factor levels (`tt`, `xlevels`, `xbar`: given, for predict()'s
# new rows; else from these data). Centred covariates make the cluster
# log-means those at the rows' average covariates, nearly uncorrelated in
# the posterior with the covariates' effects: a treatment-coded batch's
# effect and the clusters' means of its reference level were so correlated
# that QEM's coordinate-wise updates crept towards their optimum (1.4
# posterior sds short on test-mixture.R's data).
svir_mix_data <- function(formula, data, na.action, abort, tt = NULL, xlevels = NULL, xbar = NULL) {
  if (!inherits(formula, "formula") || length(formula) != 3L) {
    abort("{.arg formula} must be a two-sided formula with the count matrix on the left, e.g. {.code Y ~ batch}.")
  }
  if (length(lme4::findbars(formula))) abort("{.fn count_mixture} takes no random-effect terms such as {.code (1 | g)}.")
  if (missing(data)) data <- NULL
  Y <- svir_pln_response(formula, data, abort)
  sparse <- !is.matrix(Y)
  if (anyNA(if (sparse) Y@x else Y)) abort("The count matrix has missing values: drop or fill those rows.")
  fitting <- is.null(tt)
  if (fitting) {
    mf <- svir_pln_frame(formula, data, nrow(Y), na.action, abort)
    nas <- as.integer(attr(mf, "na.action"))
    if (length(nas)) Y <- Y[-nas, , drop = FALSE]
    tt <- stats::delete.response(stats::terms(mf))
    xlevels <- stats::.getXlevels(tt, mf)
  } else {
    nd <- if (is.data.frame(data)) data else data.frame(row.names = seq_len(nrow(Y)))
    mf <- tryCatch(stats::model.frame(tt, nd, xlev = xlevels, na.action = stats::na.fail),
                   error = function(e) abort(c("The new rows' covariates could not be read.",
                                               x = conditionMessage(e))))
    if (nrow(mf) != nrow(Y)) abort("{.arg newdata} has {nrow(mf)} row{?s} of covariates; its count matrix has {nrow(Y)}.")
  }
  n <- nrow(Y)
  x <- if (sparse) Y@x else Y
  bad <- !is.finite(x) | x < 0 | abs(x - round(x)) > 1e-8
  if (any(bad)) {
    abort("The counts must be non-negative whole numbers (found {sum(bad)} other value{?s}, such as {.val {utils::head(unique(x[bad]), 3)}}).")
  }
  if (fitting) {
    rs <- if (sparse) Matrix::rowSums(Y) else rowSums(Y)
    if (any(rs == 0)) {
      z <- which(rs == 0)
      abort(c("{length(z)} row{?s} of the count matrix {?has/have} no counts (numbers {.val {utils::head(z, 5)}}{if (length(z) > 5) ' ...' else ''}): such a row says nothing about its cluster.",
              i = "Drop {cli::qty(length(z))}{?it/them} first, e.g. {.code data[rowSums(Y) > 0, ]}."))
    }
  }
  cn <- colnames(Y)
  if (is.null(cn)) cn <- paste0("Y", seq_len(ncol(Y)))
  X <- stats::model.matrix(tt, mf)
  X <- X[, colnames(X) != "(Intercept)", drop = FALSE]
  if (ncol(X) > 0 && qr(cbind(1, X))$rank < ncol(X) + 1) {
    abort("The covariates are rank-deficient (with the clusters' means): drop redundant terms.")
  }
  if (is.null(xbar)) xbar <- colMeans(X)
  X <- sweep(X, 2L, xbar)
  O <- stats::model.offset(mf)
  if (!is.null(O)) {
    if (!is.null(dim(O)) || length(O) != n) abort("The offset must have one value per row ({n}).")
    if (any(!is.finite(O))) abort(c("The offset has non-finite values.", i = "For {.code offset(log(size_factor))}, every size factor must be positive."))
    O <- as.double(O)
  }
  list(Y = Y, sparse = sparse, X = X, dx = ncol(X), O = O, n = n, p = ncol(Y), cn = cn,
       rn = rownames(Y), tt = tt, xlevels = xlevels, xbar = xbar)
}

# The engine's spec of data `dat` (svir_mix_data) with K clusters, and the
# background's priors `bgpri` (svir_mix_bg_prior) or NULL.
svir_mix_spec <- function(dat, family, K, m_loc, bgpri = NULL) {
  spec <- list(model = "mixture", n = dat$n, p = dat$p, K = as.integer(K), dx = dat$dx,
               dist = svir_codes$mix_dist[[family$dist]], O = dat$O,
               X = if (dat$dx > 0) unname(dat$X) else NULL, m_loc = m_loc, m_scale = 2.5,
               tau_scale = 1, gamma_scale = 2.5, alpha = family$alpha)
  if (!is.null(bgpri)) spec <- c(spec, list(bg = 1L), bgpri)
  if (dat$sparse) {
    R <- Matrix::t(dat$Y) # columns of t(Y) are the rows of Y
    spec$Rp <- R@p
    spec$Rj <- R@i
    spec$Rx <- as.double(R@x)
  } else {
    spec$Y <- unname(dat$Y)
    storage.mode(spec$Y) <- "double"
  }
  spec
}

# Up to 10 principal components of log(1 + counts / size factor) (the 500
# most variable columns at most), on which the starts cluster the rows;
# once per fit, for every K. Sparse counts stay sparse: the transform keeps
# the zeros, the columns' variances come from sums, and the components
# from the eigenvectors of the chosen columns' centred cross-product
# (p' x p', p' <= 500) as scores L V - mean(L) V.
svir_mix_pcs <- function(Y, o) {
  n <- nrow(Y)
  s <- exp(o - mean(o))
  if (methods::is(Y, "sparseMatrix")) {
    L <- methods::as(Y, "CsparseMatrix")
    L@x <- log1p(L@x / s[L@i + 1L])
    cs <- Matrix::colSums
  } else {
    L <- log1p(Y / s)
    cs <- colSums
  }
  mu <- cs(L) / n
  v <- (cs(L^2) - n * mu^2) / (n - 1)
  keep <- order(v, decreasing = TRUE)[seq_len(min(500L, ncol(L)))]
  keep <- keep[v[keep] > 1e-12 * max(v)]
  npc <- min(10L, length(keep), n - 1L)
  if (length(keep) < 1L) return(matrix(0, n, 1L))
  L <- L[, keep, drop = FALSE]
  mu <- mu[keep]
  if (length(keep) > 1L && npc > 1L) {
    C <- as.matrix(Matrix::crossprod(L)) - n * tcrossprod(mu)
    V <- eigen(C, symmetric = TRUE)$vectors[, seq_len(npc), drop = FALSE]
    sc <- as.matrix(L %*% V) - matrix(drop(mu %*% V), n, npc, byrow = TRUE)
    return(sc)
  }
  matrix(as.numeric(L[, 1L]) - mu[1L], n, 1L)
}

# The background's priors (the engine's bg_loc, bg_scale and, from empty
# droplets, bgp_loc and bgp_scale) for the counts `dat` (svir_mix_data) and
# `background` (TRUE or the empty droplets' counts): per column, the
# negative binomial's maximum-likelihood log mean and log size on the empty
# droplets, each with its standard error and 0.25 in quadrature as the sd;
# with TRUE, the log mean of the column's lowest quarter of counts, sd 1.
svir_mix_bg_prior <- function(background, dat, abort) {
  p <- dat$p
  Y <- dat$Y
  if (isTRUE(background)) {
    loc <- vapply(seq_len(p), function(j) {
      y <- as.numeric(Y[, j])
      log(mean(y[y <= stats::quantile(y, 0.25)]) + 0.5)
    }, 0)
    return(list(bg_loc = loc, bg_scale = rep(1, p)))
  }
  E <- background
  ce <- colnames(E)
  if (!is.null(ce) && !is.null(colnames(Y)) && !is.null(dat$cn)) {
    miss <- setdiff(dat$cn, ce)
    if (length(miss)) {
      abort("{.arg background} lacks {length(miss)} of the count matrix's column{?s}: {.val {utils::head(miss, 5)}}.")
    }
    E <- E[, match(dat$cn, ce), drop = FALSE]
  } else if (ncol(E) != p) {
    abort("{.arg background} has {ncol(E)} column{?s}; the count matrix has {p}.")
  }
  ne <- nrow(E)
  out <- vapply(seq_len(p), function(j) {
    e <- as.numeric(E[, j])
    mh <- max(mean(e), 0.5 / ne)
    se_b <- sqrt(max(stats::var(e), mh) / ne) / mh
    nll <- function(ls) -sum(stats::dnbinom(e, size = exp(ls), mu = mh, log = TRUE))
    ls <- stats::optimize(nll, c(-5, 12))$minimum
    h <- 1e-3
    d2 <- (nll(ls + h) - 2 * nll(ls) + nll(ls - h)) / h^2
    se_p <- if (is.finite(d2) && d2 > 0) min(1 / sqrt(d2), 2) else 2
    c(log(mh), sqrt(se_b^2 + 0.25^2), ls, sqrt(se_p^2 + 0.25^2))
  }, numeric(4))
  list(bg_loc = out[1, ], bg_scale = out[2, ], bgp_loc = out[3, ], bgp_scale = out[4, ])
}

# The starting means of the guide, one vector per start: k-means++ seeds on
# the components `pcs` (svir_mix_pcs), then k-means; from its clusters,
# mu_kj = the log rate of cluster k's counts of column j (for dirmult, p
# times its share), m_j their mean over the clusters, tau_j their sd,
# gamma 0, phi_j 10, logit omega_j -2, the background at its prior's
# centre (bgpri; log psi_j at log 10 without empty droplets) with beta_j
# one half, and pi the clusters' shares. R's random numbers are put back
# after.
svir_mix_starts <- function(Y, o, pcs, dx, family, K, seed, m_loc, bgpri = NULL) {
  n <- nrow(Y)
  p <- ncol(Y)
  # each cluster's column sums, from sparse counts without densifying them
  sums <- if (is.matrix(Y)) function(cl) {
    S <- matrix(0, K, p)
    r <- rowsum(Y, cl)
    S[as.integer(rownames(r)), ] <- r
    S
  } else function(cl) as.matrix(Matrix::crossprod(Matrix::sparseMatrix(i = seq_len(n), j = cl, x = 1, dims = c(n, K)), Y))
  nb <- family$dist %in% c("nb", "zinb")
  zi <- family$dist == "zinb"
  dm <- family$dist == "dirmult"
  # squared distances of the rows to the centres ctr (n x nrow(ctr))
  d2 <- function(ctr) vapply(seq_len(nrow(ctr)), function(k) colSums((t(pcs) - ctr[k, ])^2), numeric(n))
  rng <- svir_sim_seed(seed %% .Machine$integer.max)
  on.exit(assign(".Random.seed", rng$old, envir = .GlobalEnv))
  lapply(seq_len(family$nstart), function(s) {
    set.seed(seed %% .Machine$integer.max + s)
    # k-means++: each next seed drawn with probability ~ squared distance
    ctr <- pcs[sample.int(n, 1L), , drop = FALSE]
    for (k in seq_len(K - 1L)) {
      dmin <- apply(d2(ctr), 1L, min)
      ctr <- rbind(ctr, pcs[sample.int(n, 1L, prob = dmin + 1e-12), , drop = FALSE])
    }
    km <- tryCatch(stats::kmeans(pcs, ctr, iter.max = 50L), error = function(e) NULL)
    cl <- if (is.null(km)) max.col(-d2(ctr), ties.method = "first") else km$cluster
    S <- sums(cl)
    mu <- vapply(seq_len(K), function(k) {
      r <- cl == k
      if (!any(r)) return(m_loc)
      cs <- S[k, ] + 0.1
      if (dm) log(cs / sum(cs) * p) else log(cs / sum(exp(o[r])))
    }, numeric(p))
    mu <- t(mu) # K x p
    m <- colMeans(mu)
    tau <- if (K > 1L) apply(mu, 2L, stats::sd) + 0.1 else rep(1, p)
    nk <- tabulate(cl, K) + 1
    c(as.vector(t(mu)), m, log(tau), rep(0, dx * p), if (nb) rep(log(10), p),
      if (zi) rep(-2, p),
      if (!is.null(bgpri)) c(bgpri$bg_loc, if (is.null(bgpri$bgp_loc)) rep(log(10), p) else bgpri$bgp_loc, rep(0, p)),
      log(nk[-K] / nk[K]))
  })
}

# The fit object: the other starts run here (the first ran in svi_fit()),
# the best by final ELBO kept, clusters numbered by size; with several K,
# each K's fit in turn and the one with the largest ELBO + log K! returned,
# with the table of criteria (fit$criteria).
svir_mix_finish <- function(engine, job) {
  fit <- svir_mix_one(engine, job)
  if (!length(job$other_K)) return(fit)
  fits <- c(list(fit), lapply(job$other_K, function(j) svir_mix_one(svir_run(j), j)))
  crit <- do.call(rbind, lapply(fits, function(f) {
    ll <- as.numeric(logLik(f))
    data.frame(K = f$K, elbo = f$elbo_final, criterion = f$elbo_final + lgamma(f$K + 1),
               logLik = ll, df = f$npar, BIC = stats::BIC(f), ICL = svir_mix_icl(f),
               smallest = min(colSums(f$resp)))
  }))
  best <- which.max(crit$criterion)
  crit$chosen <- seq_len(nrow(crit)) == best
  f <- fits[[best]]
  f$criteria <- crit
  f$time <- sum(vapply(fits, function(x) x$time, 0))
  f
}

# ICL (Biernacki, Celeux and Govaert 2000): BIC plus twice the entropy of
# the rows' cluster probabilities; reported beside the ELBO, not used.
svir_mix_icl <- function(fit) {
  r <- fit$resp
  ent <- -sum(r[r > 0] * log(r[r > 0]))
  stats::BIC(fit) + 2 * ent
}

# One K: its starts, the best kept, clusters numbered by size.
svir_mix_one <- function(engine, job) {
  engines <- list(engine)
  for (s in seq_along(job$starts)[-1L]) {
    j <- job
    j$spec$init_mu <- job$starts[[s]]
    j$ctrl$seed <- job$seed + s - 1
    engines[[s]] <- svir_run(j)
  }
  elbo <- vapply(engines, function(e) e$elbo_full, 0)
  best <- which.max(elbo)
  e <- engines[[best]]
  svir_warn_stop(e, job$control)
  n <- job$n
  p <- job$p
  K <- job$K
  D <- length(e$vpar) / 2
  resp <- matrix(e$resp, n, K)
  ord <- order(-colSums(resp))
  resp <- resp[, ord, drop = FALSE]
  draws <- e$draws
  mu_d <- array(0, c(nrow(draws), K, p))
  for (k in seq_len(K)) mu_d[, k, ] <- draws[, (ord[k] - 1L) * p + seq_len(p), drop = FALSE]
  eta <- cbind(draws[, D - (K - 1L) + seq_len(K - 1L), drop = FALSE], 0)
  pi_d <- exp(eta - apply(eta, 1L, max))
  pi_d <- (pi_d / rowSums(pi_d))[, ord, drop = FALSE]
  cl_names <- paste0("cluster", seq_len(K))
  dimnames(mu_d) <- list(NULL, cl_names, job$cn)
  colnames(pi_d) <- cl_names
  colnames(resp) <- cl_names
  rownames(resp) <- job$rn
  nb <- job$family$dist %in% c("nb", "zinb")
  zi <- job$family$dist == "zinb"
  if (job$family$dist == "dirmult") {
    # log expected proportions; each cluster's precision sum_j alpha_kj
    prec_d <- apply(mu_d, c(1L, 2L), function(v) sum(exp(v)))
    mu_d <- sweep(mu_d, c(1L, 2L), log(prec_d))
  }
  off_phi <- K * p + 2L * p + job$dx * p
  phi_d <- if (nb) exp(draws[, off_phi + seq_len(p), drop = FALSE])
  zi_d <- if (zi) stats::plogis(draws[, off_phi + p + seq_len(p), drop = FALSE])
  gamma_d <- if (job$dx > 0) draws[, K * p + 2L * p + seq_len(job$dx * p), drop = FALSE]
  bg <- !is.null(job$bg_prior)
  background <- foreground <- NULL
  if (bg) {
    o_bg <- off_phi + p
    background <- data.frame(column = job$cn,
                             mean = colMeans(exp(draws[, o_bg + seq_len(p), drop = FALSE])),
                             size = colMeans(exp(draws[, o_bg + p + seq_len(p), drop = FALSE])),
                             fraction = colMeans(stats::plogis(draws[, o_bg + 2L * p + seq_len(p), drop = FALSE])),
                             row.names = NULL)
    foreground <- matrix(e$foreground, n, p, dimnames = list(job$rn, job$cn))
  }
  npar <- K * p + (K - 1L) + job$dx * p + (if (nb) p else 0L) + (if (zi) p else 0L) + (if (bg) 3L * p else 0L)
  structure(list(
    call = job$call, formula = job$formula, family = job$family, method = job$method, n = n, p = p, K = K,
    resp = resp, pi_draws = pi_d, mu_draws = mu_d, phi_draws = phi_d, gamma_draws = gamma_d,
    zi_draws = zi_d, precision_draws = if (job$family$dist == "dirmult") prec_d,
    zero_inflation = if (zi) stats::setNames(colMeans(zi_d), job$cn),
    background = background, foreground = foreground, bg_prior = job$bg_prior,
    xnames = job$xnames, colnames = job$cn, ord = ord, tt = job$tt, xlevels = job$xlevels, xbar = job$xbar,
    m_loc = job$m_loc,
    elbo = e$elbo, elbo_final = e$elbo_full, elbo_window = e$elbo_final, steps = e$steps,
    stop_reason = e$stop_reason,
    ll_rows = e$ll_rows, npar = npar, time = sum(vapply(engines, function(x) x$time, 0)),
    starts = data.frame(start = seq_along(engines), elbo = elbo,
                        steps = vapply(engines, function(x) x$steps, 0L),
                        stop_reason = vapply(engines, function(x) x$stop_reason, ""),
                        kept = seq_along(engines) == best),
    backend = e$backend, backend_reason = e$backend_reason, control = job$control, seed = job$seed,
    engine = e), class = "svi_mixture")
}

#' Cluster labels of a fitted count mixture
#'
#' @param object A fit from [svi_fit()] with [count_mixture()].
#' @param ... Not used.
#' @return `clusters()`: the most probable cluster of each row (integers,
#'   clusters numbered by size, the largest first), named by the rows.
#' @export
clusters <- function(object, ...) UseMethod("clusters")

#' @rdname clusters
#' @export
clusters.svi_mixture <- function(object, ...) {
  z <- max.col(object$resp, ties.method = "first")
  names(z) <- rownames(object$resp)
  z
}

#' Cluster log-means of a fitted count mixture
#'
#' @param object A fit from [svi_fit()] with [count_mixture()].
#' @param parm Column names or indices of the count matrix (default all).
#' @param level The interval's probability.
#' @param ... Not used.
#' @return `coef()`: the posterior means of the cluster log-means `mu_kj`
#'   (a `K x p` matrix; the rate of a count is `exp(o_i + x_i gamma_j +
#'   mu_kj)` with `x_i` the row's covariates less their means over the
#'   fit's rows, so that `mu_kj` is the log rate at the average covariates). `confint()`: a data frame of central posterior intervals per
#'   cluster and column, from the fit's posterior draws.
#' @export
coef.svi_mixture <- function(object, ...) {
  apply(object$mu_draws, c(2L, 3L), mean)
}

#' @rdname coef.svi_mixture
#' @export
confint.svi_mixture <- function(object, parm, level = 0.95, ...) {
  if (!is.numeric(level) || length(level) != 1L || !(level > 0 && level < 1)) {
    cli::cli_abort("{.arg level} must be one number between 0 and 1.", class = "svir_error")
  }
  j <- if (missing(parm)) seq_len(object$p) else if (is.character(parm)) match(parm, object$colnames) else parm
  if (anyNA(j) || any(j < 1 | j > object$p)) {
    cli::cli_abort("{.arg parm} names columns that the count matrix does not have.", class = "svir_error")
  }
  a <- (1 - level) / 2
  q <- apply(object$mu_draws[, , j, drop = FALSE], c(2L, 3L), stats::quantile, probs = c(a, 1 - a))
  data.frame(cluster = rep(dimnames(q)[[2]], times = length(j)),
             column = rep(object$colnames[j], each = object$K),
             estimate = as.vector(coef(object)[, j, drop = FALSE]),
             lower = as.vector(q[1, , ]), upper = as.vector(q[2, , ]))
}

#' @export
logLik.svi_mixture <- function(object, ...) {
  structure(sum(object$ll_rows), df = object$npar, nobs = object$n, class = "logLik")
}

#' @export
nobs.svi_mixture <- function(object, ...) object$n

#' @export
print.svi_mixture <- function(x, digits = 3, ...) {
  cat(sprintf("Count mixture fit by %s (svir): %d clusters, %s counts\n", toupper(x$method), x$K,
              switch(x$family$dist, nb = "negative binomial", poisson = "Poisson",
                     zinb = "zero-inflated negative binomial", dirmult = "Dirichlet-multinomial")))
  cat("Formula:", deparse1(x$formula), "\n")
  cat(sprintf("Rows: %d; columns: %d\n", x$n, x$p))
  if (!is.null(x$background)) {
    cat(sprintf("Background per column (negative binomial, %s): counts %.1f%% foreground on average\n",
                if (is.null(x$bg_prior$bgp_loc)) "priors from the counts" else "priors from empty droplets",
                100 * mean(x$foreground)))
  }
  sz <- colSums(x$resp)
  w <- colMeans(x$pi_draws)
  tab <- rbind(size = round(sz, 1), weight = round(w, digits))
  print(tab)
  cat(sprintf("ELBO: %.1f (over all rows at the end); %s after %d %s; start %d of %d kept; %.2f s for all fits\n",
              x$elbo_final, x$stop_reason, x$steps, if (identical(x$method, "qem")) "iterations" else "steps",
              which(x$starts$kept), nrow(x$starts), x$time))
  if (!is.null(x$criteria)) {
    cat(sprintf("K = %d chosen by the ELBO (+ log K!, largest) among K = %s\n", x$K,
                paste(x$criteria$K, collapse = ", ")))
  }
  invisible(x)
}

#' @export
summary.svi_mixture <- function(object, ...) {
  structure(list(fit = object), class = "summary.svi_mixture")
}

#' @export
print.summary.svi_mixture <- function(x, ...) {
  print(x$fit)
  cat("\nStarts (k-means++ on principal components):\n")
  print(x$fit$starts, row.names = FALSE)
  if (!is.null(x$fit$criteria)) {
    cat("\nCriteria over K (criterion = ELBO + log K!, the largest chosen; ICL = BIC + 2 x the entropy of the cluster probabilities):\n")
    print(x$fit$criteria, row.names = FALSE)
  }
  invisible(x)
}

#' Cluster probabilities of new rows
#'
#' @param object A fit from [svi_fit()] with [count_mixture()].
#' @param newdata A data frame (or list) with the count matrix under the
#'   fit's response name, and the covariates and offset variables of the
#'   formula. Its count matrix must have every column the fit had (matched
#'   by name; other columns are dropped). `NULL`: the fit's rows.
#' @param type `"prob"` (a rows x clusters matrix of posterior cluster
#'   probabilities, averaged over the fit's posterior draws) or `"class"`
#'   (the most probable cluster).
#' @param ndraws How many of the fit's posterior draws to average over;
#'   `NULL`: as the fit did for its own rows, 200 or fewer so that at most
#'   `2e8` densities are evaluated (`rows x columns x K` per draw).
#' @param ... Not used.
#' @export
predict.svi_mixture <- function(object, newdata = NULL, type = c("prob", "class"), ndraws = NULL,
                                ...) {
  type <- match.arg(type)
  abort <- function(msg, .envir = parent.frame()) {
    cli::cli_abort(msg, class = "svir_error", call = NULL, .envir = .envir)
  }
  if (is.null(newdata)) {
    r <- object$resp
  } else {
    u <- svir_mix_new_rows(object, newdata, ndraws, FALSE, abort)
    r <- u$resp[, object$ord, drop = FALSE]
    dimnames(r) <- list(u$rn, colnames(object$resp))
  }
  if (type == "class") {
    z <- max.col(r, ties.method = "first")
    names(z) <- rownames(r)
    return(z)
  }
  r
}

# New rows for a count-mixture fit: the counts (genes matched by name), the
# covariates with the fit's levels, evaluated under the first ndraws of the
# fit's draws (NULL: 200 or fewer, at most 2e8 densities). resp: rows x
# clusters in the engine's order; with loglik, also each row's log density
# log sum_k pi_k p(y_i | k) under each draw (draws x rows).
svir_mix_new_rows <- function(object, newdata, ndraws, loglik, abort) {
  nd <- svir_mix_new_spec(object, newdata, abort)
  dat <- nd$dat
  spec <- nd$spec
  dr <- object$engine$draws
  if (is.null(ndraws)) ndraws <- max(1, min(200, floor(2e8 / (as.double(dat$n) * dat$p * object$K))))
  if (!is.numeric(ndraws) || length(ndraws) != 1L || !(ndraws >= 1)) {
    abort("{.arg ndraws} must be a number of posterior draws, at least 1.")
  }
  S <- min(as.integer(ndraws), nrow(dr))
  out <- .Call(C_svir_mix_resp_r, spec, dr, S, loglik)
  if (!loglik) return(list(resp = out, rn = dat$rn))
  list(resp = out[[1L]], loglik = out[[2L]], rn = dat$rn)
}

# The new rows' data (svir_mix_data, with the fit's terms, levels and
# covariate means) and the engine's spec for them; the count matrix's
# columns matched to the fit's by name.
svir_mix_new_spec <- function(object, newdata, abort) {
  f <- object$formula
  Yn <- svir_pln_response(f, newdata, abort)
  cn <- colnames(Yn)
  if (is.null(cn)) {
    if (ncol(Yn) != object$p) abort("The new count matrix has no column names and {ncol(Yn)} columns; the fit had {object$p}.")
    cn <- object$colnames
  }
  miss <- setdiff(object$colnames, cn)
  if (length(miss)) {
    abort(c("The new count matrix lacks {length(miss)} of the fit's column{?s}: {.val {utils::head(miss, 5)}}{if (length(miss) > 5) ' ...' else ''}.",
            i = "Its columns must include every gene (or taxon) the fit had, by name."))
  }
  newdata[[deparse1(f[[2L]])]] <- Yn[, match(object$colnames, cn), drop = FALSE]
  dat <- svir_mix_data(f, newdata, stats::na.fail, abort, tt = object$tt, xlevels = object$xlevels,
                       xbar = object$xbar)
  spec <- svir_mix_spec(dat, object$family, object$K, object$m_loc, object$bg_prior)
  list(dat = dat, spec = spec)
}

#' Marker genes of a cluster
#'
#' The columns of the count matrix ranked by the posterior probability that
#' a cluster's log2 fold change against the rest (or another cluster)
#' exceeds `lfc` in absolute value, from the fit's posterior draws of the
#' cluster log-means. Against `"rest"`, the reference is the other clusters'
#' rates averaged with their weights pi.
#'
#' @param object A fit from [svi_fit()] with [count_mixture()].
#' @param cluster The cluster (a number, clusters being numbered by size).
#' @param vs `"rest"` or another cluster's number.
#' @param lfc The log2 fold change that counts as a difference.
#' @param level The interval's probability.
#' @param ... Not used.
#' @return A data frame, one row per column of the count matrix, most
#'   probable markers first: `column`, `lfc` (posterior mean log2 fold
#'   change), `lower`, `upper` (central interval), `prob` (posterior
#'   probability that `|lfc|` exceeds the threshold).
#' @export
markers <- function(object, ...) UseMethod("markers")

#' @rdname markers
#' @export
markers.svi_mixture <- function(object, cluster, vs = "rest", lfc = 1, level = 0.95, ...) {
  K <- object$K
  if (K < 2L) cli::cli_abort("The fit has one cluster: there is nothing to compare it with.", class = "svir_error")
  ok <- function(k) is.numeric(k) && length(k) == 1L && k %in% seq_len(K)
  if (!ok(cluster)) {
    cli::cli_abort("{.arg cluster} must be one cluster number from 1 to {K}.", class = "svir_error")
  }
  if (!(identical(vs, "rest") || (ok(vs) && vs != cluster))) {
    cli::cli_abort("{.arg vs} must be {.val rest} or another cluster's number from 1 to {K}.",
                   class = "svir_error")
  }
  if (!is.numeric(lfc) || length(lfc) != 1L || !(lfc >= 0)) {
    cli::cli_abort("{.arg lfc} must be one non-negative number (a log2 fold change).", class = "svir_error")
  }
  mu <- object$mu_draws
  a <- mu[, cluster, , drop = TRUE]
  if (identical(vs, "rest")) {
    others <- setdiff(seq_len(K), cluster)
    w <- object$pi_draws[, others, drop = FALSE]
    w <- w / rowSums(w)
    ref <- 0
    for (m in seq_along(others)) ref <- ref + w[, m] * exp(mu[, others[m], ])
    ref <- log(ref)
  } else {
    ref <- mu[, vs, , drop = TRUE]
  }
  l2 <- (a - ref) / log(2)
  if (is.null(dim(l2))) l2 <- matrix(l2, ncol = object$p)
  al <- (1 - level) / 2
  out <- data.frame(column = object$colnames, lfc = colMeans(l2),
                    lower = apply(l2, 2L, stats::quantile, probs = al),
                    upper = apply(l2, 2L, stats::quantile, probs = 1 - al),
                    prob = colMeans(abs(l2) > lfc), row.names = NULL)
  out[order(-out$prob, -abs(out$lfc)), , drop = FALSE]
}

#' @export
plot.svi_mixture <- function(x, which = c("elbo", "criteria", "markers"), n_markers = 5, ...) {
  which <- match.arg(which)
  if (which == "elbo") {
    graphics::plot(x$elbo, type = "l", xlab = "step", ylab = "ELBO estimate",
                   main = sprintf("Count mixture, K = %d: ELBO of the kept start", x$K), ...)
  } else if (which == "criteria") {
    if (is.null(x$criteria)) {
      cli::cli_abort("The fit has one {.arg K}: fit with {.code count_mixture(K = 2:8)} for the criteria.",
                     class = "svir_error")
    }
    cr <- x$criteria
    graphics::plot(cr$K, cr$criterion, type = "b", xlab = "K", ylab = "ELBO + log K! (larger is better)",
                   main = "Choice of K", ...)
    graphics::points(cr$K[cr$chosen], cr$criterion[cr$chosen], pch = 19)
  } else {
    top <- unique(unlist(lapply(seq_len(x$K), function(k)
      utils::head(markers(x, k)$column, n_markers))))
    m <- coef(x)[, top, drop = FALSE]
    m <- sweep(m, 2L, colMeans(m))
    graphics::image(seq_len(ncol(m)), seq_len(nrow(m)), t(m), axes = FALSE, xlab = "",
                    ylab = "cluster", main = "Top markers: cluster log-means less their mean",
                    col = grDevices::hcl.colors(25, "Blue-Red 3"), ...)
    graphics::axis(1, at = seq_len(ncol(m)), labels = colnames(m), las = 2, cex.axis = 0.7)
    graphics::axis(2, at = seq_len(nrow(m)), labels = seq_len(nrow(m)), las = 1)
  }
  invisible(x)
}
