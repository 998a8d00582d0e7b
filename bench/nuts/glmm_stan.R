# The model of an svir GLMM fit written in Stan, with svir's priors.
#
# Generalises stan_prior() / stan_model_of() / stan_summary() of bench/glmm.R
# (Gaussian only, priors passed as data) to the families gaussian (identity),
# binomial (logit), poisson (log) and negbin() (log, NB2: variance
# mu + mu^2 / phi), any number of random-effect terms (correlated or not) and
# offsets. The priors are read from prior_summary(fit) and written into the
# program as numeric literals (so a .stan file is self-contained); the data
# hold only the design.
#
# The parameterisation is brms's: predictors centred by fit$scaling$x_center,
# the `intercept` prior on the centred intercept, non-centred random effects
# (r = diag(sd) L z, z ~ std_normal()), half-distributions for sds, sigma and
# phi through <lower=0> (their truncation constant does not depend on the
# parameters), lkj_corr_cholesky for a correlated term's correlations. The
# generated quantity b_Intercept is the intercept of the uncentred predictors,
# the `(Intercept)` of fit$draws.
#
# Functions:
#   stan_model_of(fit)            the program, its data and the map from svir's
#                                 draws names to Stan's flat names
#   stan_prior_table(sm)          prior_summary(fit) next to the Stan statements
#   stan_check_density(sm, fit, smod)
#                                 Stan's log density against one written in R
#                                 from svir's objects (family$loglik for negbin)
#   stan_draws_svir(sf, sm)       iterations x chains x parameters array of the
#                                 draws in svir's naming (colnames(fit$draws))
#
# Source this file with rstan available; it defines functions only.

# A number as a Stan literal that reads back to the same double.
stan_lit <- function(x) {
  stopifnot(is.numeric(x), length(x) == 1L, is.finite(x))
  s <- sprintf("%.17g", x)
  # shortest representation that round-trips, for readability
  for (d in 6:17) {
    t <- sprintf(paste0("%.", d, "g"), x)
    if (as.numeric(t) == x) {
      s <- t
      break
    }
  }
  s
}

# One Stan sampling statement for a prior (an svir_dist) on `param`.
stan_prior_stmt <- function(param, d) {
  L <- stan_lit
  switch(d$dist,
    flat = character(),
    normal = sprintf("%s ~ normal(%s, %s);", param, L(d$location), L(d$scale)),
    half_normal = sprintf("%s ~ normal(0, %s);", param, L(d$scale)),
    student_t = sprintf("%s ~ student_t(%s, %s, %s);", param, L(d$df), L(d$location), L(d$scale)),
    half_student_t = sprintf("%s ~ student_t(%s, 0, %s);", param, L(d$df), L(d$scale)),
    exponential = sprintf("%s ~ exponential(%s);", param, L(d$rate)),
    lkj = sprintf("%s ~ lkj_corr_cholesky(%s);", param, L(d$eta)),
    stop("no Stan translation for a ", d$dist, " prior")
  )
}

# svir family name of a fit: gaussian, binomial, poisson or negbin.
svir_family_of <- function(fit) {
  fam <- if (!is.null(fit$family_name)) fit$family_name else stats::family(fit)$family
  link <- stats::family(fit)$link
  want <- c(gaussian = "identity", binomial = "logit", poisson = "log", negbin = "log")
  if (!fam %in% names(want)) stop("no Stan translation for the ", fam, " family")
  if (!identical(link, want[[fam]])) stop("the ", fam, " family needs the ", want[[fam]], " link here, not ", link)
  fam
}

# The Stan program and data of the model of an svir fit.
# Returns list(code, data, keep (Stan parameters to save), map (named
# character: svir draws name -> Stan flat name), prior_rows (data.frame: one
# row per Stan prior statement, with the prior_summary row it comes from),
# family, param_names (Stan parameters block), terms (per random-effect term:
# q, J, correlated, ones)).
stan_model_of <- function(fit) {
  fam <- svir_family_of(fit)
  if (!is.null(fit$zi)) stop("zero inflation is not translated")
  if (!isTRUE(fit$scaling$has_intercept)) stop("a model without an intercept is not translated")
  ps <- prior_summary(fit)
  dists <- attr(ps, "dist")
  used <- integer(nrow(ps))
  prior_rows <- data.frame(row = integer(), stan_param = character(), stan = character(),
                           stringsAsFactors = FALSE)
  prior_of <- function(cls, coef = "", group = "") {
    k <- which(ps$class == cls & ps$coef == coef & ps$group == group)
    if (length(k) != 1L) stop("no single prior row for ", cls, " '", coef, "' '", group, "'")
    k
  }
  add_prior <- function(param, k) {
    used[k] <<- used[k] + 1L
    st <- stan_prior_stmt(param, dists[[k]])
    prior_rows[nrow(prior_rows) + 1L, ] <<- list(k, param, if (length(st)) st else "(flat: no statement)")
    pri <<- c(pri, st)
  }

  X <- fit$X
  stopifnot(colnames(X)[1] == "(Intercept)", all(X[, 1] == 1))
  N <- nrow(X)
  P <- ncol(X) - 1L
  xm <- fit$scaling$x_center[-1]
  if (P > 0L) {
    Xr <- unclass(X)[, -1, drop = FALSE]
    attr(Xr, "assign") <- attr(Xr, "contrasts") <- NULL
    # svir centres the columns at their means (the brms convention)
    stopifnot(isTRUE(all.equal(unname(colMeans(Xr)), unname(xm), tolerance = 1e-10)))
    Xc <- sweep(Xr, 2L, xm, "-")
    dimnames(Xc) <- NULL
  }
  dat <- list(N = N)
  dcl <- "int<lower=1> N;"
  if (fam == "gaussian") {
    dat$y <- as.numeric(fit$y)
    dcl <- c(dcl, "vector[N] y;")
  } else {
    y <- as.numeric(fit$y)
    stopifnot(all(y >= 0), all(y == round(y)))
    dat$y <- as.integer(y)
    dcl <- c(dcl, "int<lower=0> y[N];")
    if (fam == "binomial") {
      tr <- as.numeric(fit$trials)
      stopifnot(length(tr) == N, all(tr == round(tr)), all(tr >= y))
      dat$trials <- as.integer(tr)
      dcl <- c(dcl, "int<lower=0> trials[N];")
    }
  }
  if (P > 0L) {
    dat$P <- P
    dat$Xc <- Xc
    dat$x_mean <- as.array(unname(xm))
    dcl <- c(dcl, "int<lower=1> P;", "matrix[N, P] Xc;", "vector[P] x_mean;")
  }
  has_off <- !is.null(fit$offset) && any(fit$offset != 0)
  if (has_off) {
    stopifnot(length(fit$offset) == N)
    dat$offs <- as.numeric(fit$offset)
    dcl <- c(dcl, "vector[N] offs;")
  }

  par <- c("real Intercept;", if (P > 0L) "vector[P] b;")
  param_names <- c("Intercept", if (P > 0L) "b")
  mdl <- sprintf("vector[N] eta = %s;",
                 if (P == 0L && !has_off) "rep_vector(Intercept, N)" else
                   paste(c("Intercept", if (P > 0L) "Xc * b", if (has_off) "offs"), collapse = " + "))
  upd <- character()
  pri <- character()
  gq <- if (P > 0L) "real b_Intercept = Intercept - dot_product(x_mean, b);" else
    "real b_Intercept = Intercept;"
  keep <- c("b_Intercept", if (P > 0L) "b")
  map <- c("(Intercept)" = "b_Intercept")
  if (P > 0L) map[colnames(X)[-1]] <- sprintf("b[%d]", seq_len(P))

  add_prior("Intercept", prior_of("Intercept"))
  for (k in seq_len(P)) add_prior(sprintf("b[%d]", k), prior_of("b", colnames(X)[k + 1]))

  terms <- list()
  for (t in seq_along(fit$re)) {
    tm <- fit$re[[t]]
    q <- length(tm$cnms)
    J <- tm$ngroups
    Z <- unname(as.matrix(tm$Z))
    stopifnot(nrow(Z) == N, ncol(Z) == q, length(tm$group) == N,
              all(tm$group >= 1L), all(tm$group <= J))
    ones <- vapply(seq_len(q), function(c) all(Z[, c] == 1), TRUE)
    dat[[sprintf("J_%d", t)]] <- J
    dat[[sprintf("g_%d", t)]] <- as.integer(tm$group)
    dcl <- c(dcl, sprintf("int<lower=1> J_%d;", t), sprintf("int<lower=1, upper=J_%d> g_%d[N];", t, t))
    if (!all(ones)) {
      dat[[sprintf("Z_%d", t)]] <- Z
      dcl <- c(dcl, sprintf("matrix[N, %d] Z_%d;", q, t))
    }
    par <- c(par, sprintf("vector<lower=0>[%d] sd_%d;", q, t), sprintf("matrix[%d, J_%d] z_%d;", q, t, t))
    param_names <- c(param_names, sprintf("sd_%d", t), sprintf("z_%d", t))
    keep <- c(keep, sprintf("sd_%d", t))
    for (c in seq_len(q)) {
      add_prior(sprintf("sd_%d[%d]", t, c), prior_of("sd", tm$cnms[c], tm$grpvar))
      map[paste0("sd_", tm$grpvar, "__", tm$cnms[c])] <- sprintf("sd_%d[%d]", t, c)
    }
    pri <- c(pri, sprintf("to_vector(z_%d) ~ std_normal();", t))
    cor <- isTRUE(tm$correlated) && q > 1L
    if (cor) {
      par <- c(par, sprintf("cholesky_factor_corr[%d] L_%d;", q, t))
      param_names <- c(param_names, sprintf("L_%d", t))
      add_prior(sprintf("L_%d", t), prior_of("cor", "", tm$grpvar))
      mdl <- c(mdl, sprintf("matrix[J_%d, %d] r_%d = (diag_pre_multiply(sd_%d, L_%d) * z_%d)';",
                            t, q, t, t, t, t))
      gq <- c(gq, sprintf("corr_matrix[%d] Cor_%d = multiply_lower_tri_self_transpose(L_%d);", q, t, t))
      keep <- c(keep, sprintf("Cor_%d", t))
      for (i in 2:q) for (j in seq_len(i - 1L)) {
        # svir's name: cor_<grp>__<cnm_j>__<cnm_i>, j < i
        map[sprintf("cor_%s__%s__%s", tm$grpvar, tm$cnms[j], tm$cnms[i])] <- sprintf("Cor_%d[%d,%d]", t, i, j)
      }
    } else {
      mdl <- c(mdl, sprintf("matrix[J_%d, %d] r_%d = (diag_pre_multiply(sd_%d, z_%d))';", t, q, t, t, t))
    }
    for (c in seq_len(q)) {
      upd <- c(upd, if (ones[c]) sprintf("eta += r_%d[g_%d, %d];", t, t, c)
                    else sprintf("eta += r_%d[g_%d, %d] .* Z_%d[, %d];", t, t, c, t, c))
    }
    terms[[t]] <- list(q = q, J = J, correlated = cor, ones = ones, grpvar = tm$grpvar, cnms = tm$cnms)
  }

  # the family's positive auxiliary parameter (sigma or phi), if any
  aux <- switch(fam, gaussian = "sigma", negbin = "phi", NULL)
  if (!is.null(aux)) {
    par <- c(par, sprintf("real<lower=0> %s;", aux))
    param_names <- c(param_names, aux)
    add_prior(aux, prior_of(aux))
    keep <- c(keep, aux)
    map[aux] <- aux
  }
  lik <- switch(fam,
    gaussian = "y ~ normal(eta, sigma);",
    binomial = "y ~ binomial_logit(trials, eta);",
    poisson = "y ~ poisson_log(eta);",
    negbin = "y ~ neg_binomial_2_log(eta, phi);")

  if (any(used == 0L)) {
    stop("prior_summary rows without a Stan statement: ",
         paste(format(ps[used == 0L, c("class", "coef", "group", "prior")]), collapse = "; "))
  }
  dn <- colnames(fit$draws)
  if (!setequal(dn, names(map))) {
    stop("the Stan parameters do not match colnames(fit$draws): draws have ",
         paste(setdiff(dn, names(map)), collapse = ", "), "; Stan has ",
         paste(setdiff(names(map), dn), collapse = ", "))
  }
  map <- map[dn]

  ind <- function(x) paste0("  ", x, collapse = "\n")
  code <- paste0(
    "// generated by bench/nuts/glmm_stan.R from an svir fit: ", deparse1(formula(fit)),
    ", family ", fam, "\n",
    "// priors: svir's prior_summary(fit), as literals; predictors centred at their means\n",
    "data {\n", ind(dcl), "\n}\n",
    "parameters {\n", ind(par), "\n}\n",
    "model {\n", ind(mdl), "\n", if (length(upd)) paste0(ind(upd), "\n"), ind(pri), "\n  ", lik, "\n}\n",
    "generated quantities {\n", ind(gq), "\n}\n")
  prior_rows$class <- ps$class[prior_rows$row]
  prior_rows$coef <- ps$coef[prior_rows$row]
  prior_rows$group <- ps$group[prior_rows$row]
  prior_rows$svir_prior <- ps$prior[prior_rows$row]
  list(code = code, data = dat, keep = keep, map = map, family = fam, prior_rows = prior_rows,
       prior_summary = ps, param_names = param_names, terms = terms, P = P, has_offset = has_off)
}

# prior_summary(fit) and the Stan statements side by side, one line per
# Stan prior statement (a prior_summary row may serve several parameters,
# e.g. none here, but a class-wide b prior would).
stan_prior_table <- function(sm) {
  pr <- sm$prior_rows
  data.frame(row = pr$row, class = pr$class, coef = pr$coef, group = pr$group,
             svir_prior = pr$svir_prior, stan = pr$stan, stringsAsFactors = FALSE)
}

# ---- checking the program against a density written in R -----------------------

# log density of an svir_dist at x (vector), up to the same constants Stan's
# `~` drops (none that depend on x).
r_prior_lpdf <- function(x, d) {
  switch(d$dist,
    flat = 0,
    normal = , half_normal = sum(stats::dnorm(x, if (d$dist == "normal") d$location else 0, d$scale, log = TRUE)),
    student_t = , half_student_t = {
      loc <- if (d$dist == "student_t") d$location else 0
      sum(stats::dt((x - loc) / d$scale, d$df, log = TRUE) - log(d$scale))
    },
    exponential = sum(stats::dexp(x, d$rate, log = TRUE)),
    stop("no R density for ", d$dist))
}

# lkj_corr_cholesky(L | eta): sum_{k >= 2} (K - k + 2 eta - 2) log L[k, k]
r_lkj_chol_lpdf <- function(L, eta) {
  K <- nrow(L)
  if (K < 2L) return(0)
  k <- 2:K
  sum((K - k + 2 * eta - 2) * log(diag(L)[k]))
}

# The log posterior density of the model of `fit`, from svir's objects
# (fit$X, fit$re, prior_summary(), family), at the Stan parameter values `p`
# (a list as constrain_pars() returns), up to a constant.
r_log_post <- function(fit, sm, p) {
  ps <- prior_summary(fit)
  dists <- attr(ps, "dist")
  row <- function(cls, coef = "", group = "") {
    dists[[which(ps$class == cls & ps$coef == coef & ps$group == group)]]
  }
  X <- unclass(fit$X)
  xm <- fit$scaling$x_center
  b <- if (sm$P > 0L) as.numeric(p$b) else numeric()
  lp <- r_prior_lpdf(p$Intercept, row("Intercept"))
  for (k in seq_along(b)) lp <- lp + r_prior_lpdf(b[k], row("b", colnames(fit$X)[k + 1L]))
  eta <- p$Intercept + if (length(b)) drop(sweep(X[, -1, drop = FALSE], 2L, xm[-1], "-") %*% b) else 0
  if (!is.null(fit$offset)) eta <- eta + fit$offset
  for (t in seq_along(fit$re)) {
    tm <- fit$re[[t]]
    q <- length(tm$cnms)
    sdv <- as.numeric(p[[sprintf("sd_%d", t)]])
    z <- matrix(p[[sprintf("z_%d", t)]], nrow = q)
    for (c in seq_len(q)) lp <- lp + r_prior_lpdf(sdv[c], row("sd", tm$cnms[c], tm$grpvar))
    lp <- lp + sum(stats::dnorm(z, log = TRUE))
    if (isTRUE(tm$correlated) && q > 1L) {
      L <- matrix(p[[sprintf("L_%d", t)]], nrow = q)
      lp <- lp + r_lkj_chol_lpdf(L, row("cor", "", tm$grpvar)$eta)
      r <- t(diag(sdv, q) %*% L %*% z)
    } else {
      r <- t(sdv * z)
    }
    Z <- as.matrix(tm$Z)
    eta <- eta + rowSums(Z * r[tm$group, , drop = FALSE])
  }
  y <- as.numeric(fit$y)
  ll <- switch(sm$family,
    gaussian = {
      lp <- lp + r_prior_lpdf(p$sigma, row("sigma"))
      sum(stats::dnorm(y, eta, p$sigma, log = TRUE))
    },
    binomial = sum(stats::dbinom(y, fit$trials, stats::plogis(eta), log = TRUE)),
    poisson = sum(stats::dpois(y, exp(eta), log = TRUE)),
    negbin = {
      lp <- lp + r_prior_lpdf(p$phi, row("phi"))
      # svir's own NB2 density (dnbinom(size = phi, mu = mu))
      sum(stats::family(fit)$loglik(y, exp(eta), p$phi))
    })
  lp + ll
}

# Compares differences of Stan's log density (log_prob without the Jacobian;
# the constants that `~` drops cancel) between points with the same
# differences of r_log_post(). The points: draws of a short NUTS run (so that
# they lie where the posterior is) and the same draws moved a little at random on the
# unconstrained scale. Also checks b_Intercept against R. Returns a
# data.frame of the comparisons; stops on a mismatch.
stan_check_density <- function(sm, fit, smod, npoints = 4L, seed = 1L) {
  sf0 <- suppressWarnings(rstan::sampling(smod, data = sm$data, chains = 1, iter = 400, warmup = 300,
                                          refresh = 0, seed = seed, pars = sm$param_names))
  ex <- rstan::extract(sf0, pars = sm$param_names, permuted = TRUE)
  slice <- function(a, i) {
    d <- dim(a)
    if (length(d) <= 1L) return(a[i])
    x <- do.call(`[`, c(list(a, i), rep(list(TRUE), length(d) - 1L), list(drop = FALSE)))
    array(x, dim = d[-1L])
  }
  set.seed(seed)
  ndraw <- dim(ex[[1]])[1]
  pick <- round(seq(1, ndraw, length.out = npoints))
  us <- lapply(pick, function(i) rstan::unconstrain_pars(sf0, lapply(ex, slice, i = i)))
  us <- c(us, lapply(us, function(u) u + stats::rnorm(length(u), sd = 0.05)))
  out <- data.frame(point = seq_along(us), stan = NA_real_, r = NA_real_)
  for (k in seq_along(us)) {
    p <- rstan::constrain_pars(sf0, us[[k]])
    out$stan[k] <- rstan::log_prob(sf0, us[[k]], adjust_transform = FALSE)
    out$r[k] <- r_log_post(fit, sm, p)
    bi <- p$Intercept - if (sm$P > 0L) sum(fit$scaling$x_center[-1] * p$b) else 0
    if (!is.null(p$b_Intercept)) stopifnot(isTRUE(all.equal(p$b_Intercept, bi, tolerance = 1e-10)))
  }
  out$stan_diff <- out$stan - out$stan[1]
  out$r_diff <- out$r - out$r[1]
  err <- abs(out$stan_diff - out$r_diff)
  tol <- 1e-9 * pmax(1, abs(out$r), abs(out$r[1]))
  if (any(!is.finite(err)) || any(err > tol)) {
    print(out)
    stop("Stan's log density differs from the R version by up to ", format(max(err)))
  }
  out$abs_err <- err
  out
}

# ---- draws in svir's naming ---------------------------------------------------------

# iterations x chains x parameters array of the post-warmup draws, named and
# ordered as colnames(fit$draws).
stan_draws_svir <- function(sf, sm) {
  a <- rstan::extract(sf, permuted = FALSE, inc_warmup = FALSE)
  miss <- setdiff(sm$map, dimnames(a)[[3]])
  if (length(miss)) stop("missing in the Stan draws: ", paste(miss, collapse = ", "))
  a <- a[, , unname(sm$map), drop = FALSE]
  dimnames(a)[[3]] <- names(sm$map)
  a
}
