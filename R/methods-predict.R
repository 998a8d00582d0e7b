# fitted(), residuals(), predict() and simulate().

#' @importFrom stats fitted residuals predict simulate
NULL

# ---- design of new data ---------------------------------------------------------

# Which random-effect terms re.form keeps: NULL = all, NA or ~0 = none, a
# formula with bars = those terms (matched on the bar, e.g. `Days | Subject`).
svir_re_keep <- function(object, re.form) {
  nt <- length(object$re)
  if (is.null(re.form)) return(rep(TRUE, nt))
  if (identical(re.form, NA) || (is.logical(re.form) && length(re.form) == 1L && is.na(re.form))) {
    return(rep(FALSE, nt))
  }
  if (!inherits(re.form, "formula")) {
    cli::cli_abort(c("{.arg re.form} must be NULL (all random effects), NA or {.code ~0} (none), or a formula of random-effect terms.",
                     "x" = "It is {.obj_type_friendly {re.form}}."),
                   class = "svir_error", call = NULL)
  }
  bars <- lme4::findbars(lme4::expandDoubleVerts(re.form))
  if (!length(bars)) return(rep(FALSE, nt))
  want <- vapply(bars, function(b) paste(deparse(b, width.cutoff = 500L), collapse = " "), "")
  have <- vapply(object$re, function(r) {
    if (!is.null(r$term)) r$term else paste(r$cnms, collapse = "+")
  }, "")
  norm <- function(s) gsub("[[:space:]]+", "", s)
  bad <- setdiff(norm(want), norm(have))
  if (length(bad)) {
    cli::cli_abort(c("{.arg re.form} has random-effect term{?s} {.code {bad}} that the model does not have.",
                     "i" = "The model's terms are {.code {have}}."),
                   class = "svir_error", call = NULL)
  }
  norm(have) %in% norm(want)
}

# Levels of the factors of the model frame (for xlev of new model frames).
svir_frame_xlev <- function(frame, vars) {
  out <- list()
  for (v in intersect(vars, names(frame))) {
    x <- frame[[v]]
    if (is.factor(x)) out[[v]] <- levels(x)
    else if (is.character(x)) out[[v]] <- sort(unique(x))
  }
  out
}

# Character columns as factors, as model frames hold them.
svir_factorize <- function(data) {
  for (v in names(data)) if (is.character(data[[v]])) data[[v]] <- factor(data[[v]])
  data
}

# X, offset and per-term Z / level index for new data (or the fitting data
# when newdata is NULL). idx is the row of the term's levels, NA for a level
# not in the fit (allowed only with allow.new.levels) or a missing group;
# `new` marks new levels, `new_key` names them.
svir_design <- function(object, newdata = NULL, keep = rep(TRUE, length(object$re)),
                        allow.new.levels = FALSE) {
  re <- object$re
  if (is.null(newdata)) {
    n <- nrow(object$X)
    terms <- lapply(which(keep), function(t) {
      list(t = t, Z = re[[t]]$Z, idx = re[[t]]$group, new = rep(FALSE, n),
           new_key = rep(NA_character_, n))
    })
    return(list(X = object$X, offset = object$offset, terms = terms, n = n,
                rownames = rownames(object$frame)))
  }
  if (!is.data.frame(newdata)) {
    cli::cli_abort("{.arg newdata} must be a data frame, not {.obj_type_friendly {newdata}}.",
                   class = "svir_error", call = NULL)
  }
  frame <- object$frame
  env <- environment(object$formula) %||% parent.frame()
  tf <- object$terms_fixed
  if (is.null(tf)) tf <- svir_terms_with_predvars(lme4::nobars(object$formula), frame)
  xlev <- object$xlevels %||% stats::.getXlevels(tf, frame)
  mf <- tryCatch(
    stats::model.frame(tf, newdata, na.action = stats::na.pass, xlev = xlev),
    error = function(e) svir_newdata_error(e)
  )
  X <- stats::model.matrix(tf, mf, contrasts.arg = object$contrasts %||% attr(object$X, "contrasts"))
  if (!identical(colnames(X), colnames(object$X))) {
    cli::cli_abort(c("{.arg newdata} gives fixed-effect columns that differ from the fit's.",
                     "x" = "Expected {.val {colnames(object$X)}}, got {.val {colnames(X)}}."),
                   class = "svir_error", call = NULL)
  }
  n <- nrow(X)
  offset <- stats::model.offset(mf)
  nd <- svir_factorize(newdata)
  terms <- lapply(which(keep), function(t) {
    r <- re[[t]]
    lhs <- r$lhs
    if (is.null(lhs)) lhs <- str2lang(sub("\\|.*$", "", r$term))
    tt <- svir_terms_with_predvars(eval(substitute(~foo, list(foo = lhs))), frame)
    vars <- vapply(as.list(attr(tt, "variables"))[-1L], deparse1, "")
    mft <- tryCatch(
      stats::model.frame(tt, newdata, na.action = stats::na.pass,
                         xlev = svir_frame_xlev(frame, vars)),
      error = function(e) svir_newdata_error(e)
    )
    Z <- stats::model.matrix(tt, mft)
    if (!identical(colnames(Z), r$cnms)) {
      cli::cli_abort(c("{.arg newdata} gives random-effect columns for {.var {r$grpvar}} that differ from the fit's.",
                       "x" = "Expected {.val {r$cnms}}, got {.val {colnames(Z)}}."),
                     class = "svir_error", call = NULL)
    }
    g <- tryCatch(eval(str2lang(r$grpvar), nd, env), error = function(e) svir_newdata_error(e))
    g <- as.character(g)
    if (length(g) != n) g <- rep_len(g, n)
    idx <- match(g, r$levels)
    new <- is.na(idx) & !is.na(g)
    if (any(new) && !allow.new.levels) {
      nl <- unique(g[new])
      grpvar <- r$grpvar
      shown <- nl[seq_len(min(5L, length(nl)))]
      cli::cli_abort(c("{.arg newdata} has {length(nl)} new level{?s} of grouping factor {.var {grpvar}}, not in the fitted data: {.val {shown}}{if (length(nl) > 5L) ', ...' else ''}.",
                       "i" = "Use {.code allow.new.levels = TRUE} to predict {cli::qty(length(nl))}{?it/them} with the random effect drawn from the population (zero for the point prediction)."),
                     class = "svir_error", call = NULL)
    }
    list(t = t, Z = matrix(as.double(Z), n, ncol(Z), dimnames = list(NULL, r$cnms)),
         idx = idx, new = new, new_key = ifelse(new, g, NA_character_),
         missing_group = is.na(g))
  })
  list(X = X, offset = offset, terms = terms, n = n, rownames = rownames(newdata))
}

svir_newdata_error <- function(e) {
  msg <- conditionMessage(e)
  m <- regmatches(msg, regexec("object '([^']+)' not found", msg))[[1]]
  if (length(m) == 2L) {
    cli::cli_abort(c("Variable {.var {m[2]}} of the model is not in {.arg newdata}.",
                     "i" = "{.arg newdata} needs every predictor and grouping variable of the formula."),
                   class = "svir_error", call = NULL)
  }
  cli::cli_abort(c("Can't build the model frame of {.arg newdata}.", "x" = "{msg}"),
                 class = "svir_error", call = NULL)
}

# The rows `rows` of a design.
svir_design_rows <- function(des, rows) {
  if (length(rows) == des$n) return(des)
  des$X <- des$X[rows, , drop = FALSE]
  if (!is.null(des$offset)) des$offset <- des$offset[rows]
  des$terms <- lapply(des$terms, function(tm) {
    tm$Z <- tm$Z[rows, , drop = FALSE]
    for (nm in c("idx", "new", "new_key", "missing_group")) {
      if (!is.null(tm[[nm]])) tm[[nm]] <- tm[[nm]][rows]
    }
    tm
  })
  des$n <- length(rows)
  des$rownames <- des$rownames[rows]
  des
}

# Plug-in linear predictor (raw units) at the posterior means.
svir_eta_mean <- function(object, des) {
  eta <- drop(des$X %*% object$fixef$mean) + object$beta_map$eta_shift
  if (!is.null(des$offset)) eta <- eta + des$offset
  for (tm in des$terms) {
    cv <- object$ranef[[tm$t]]$condval
    B <- cv[ifelse(is.na(tm$idx), 1L, tm$idx), , drop = FALSE]
    B[is.na(tm$idx), ] <- 0
    eta <- eta + rowSums(tm$Z * B)
    if (!is.null(tm$missing_group)) eta[tm$missing_group] <- NA
  }
  eta
}

# Draws of the linear predictor (n x length(sel)), raw units: globals from
# the stored draws `sel`, random effects from q(z | group) (existing levels),
# or from N(0, Sigma) (new levels, and all levels when new_all = TRUE).
svir_eta_draws <- function(object, des, sel, new_all = FALSE) {
  theta <- object$engine$draws
  nd <- length(sel)
  beta <- object$draws[sel, colnames(object$X), drop = FALSE]
  eta <- des$X %*% t(beta) + object$beta_map$eta_shift
  if (!is.null(des$offset)) eta <- eta + des$offset
  for (tm in des$terms) {
    t <- tm$t
    r <- object$re[[t]]
    q <- length(r$cnms)
    A <- svir_re_A(theta[sel, , drop = FALSE], object$index, t, r, object$scaling$y_scale)
    A0 <- if (!is.null(r$centre) && r$centre != 0) {
      svir_re_A(theta[sel, , drop = FALSE], object$index, t, within(r, centre <- NULL),
                object$scaling$y_scale)
    }
    # one z per used level (existing) and per new level
    if (new_all) {
      key <- ifelse(is.na(tm$idx), tm$new_key, r$levels[tm$idx])
      ukey <- unique(key[!is.na(key)])
      row <- match(key, ukey)
      Ju <- length(ukey)
      m <- matrix(0, Ju, q)
      C <- array(0, c(Ju, q, q))
      for (k in seq_len(q)) C[, k, k] <- 1
    } else {
      used <- sort(unique(tm$idx[!is.na(tm$idx)]))
      unew <- unique(tm$new_key[tm$new])
      Ju <- length(used) + length(unew)
      row <- ifelse(is.na(tm$idx), length(used) + match(tm$new_key, unew), match(tm$idx, used))
      m <- matrix(0, Ju, q)
      C <- array(0, c(Ju, q, q))
      for (k in seq_len(q)) C[, k, k] <- 1
      if (length(used)) {
        m[seq_along(used), ] <- matrix(as.double(object$engine$m[[t]]), ncol = q)[used, , drop = FALSE]
        Cu <- svir_unpack_C(matrix(as.double(object$engine$C[[t]]), ncol = q * (q + 1L) / 2L)[used, , drop = FALSE], q)
        C[seq_along(used), , ] <- Cu
      }
    }
    ok <- which(!is.na(row))
    Zok <- tm$Z[ok, , drop = FALSE]
    rok <- row[ok]
    # coupled guide: existing levels' effects are A z - shift (new levels: A z)
    U <- if (new_all) NULL else svir_re_shift(object$engine, t, object$scaling$y_scale, sel)
    n_used <- if (new_all) 0L else length(used)
    Ca <- lapply(seq_len(q), function(a) matrix(C[, a, ], Ju, q))
    # method "laplace" keeps the draws of z that go with each global draw
    zd <- object$engine$z_draws
    zoff <- sum(vapply(object$re[seq_len(t - 1L)], function(rr) rr$ngroups * length(rr$cnms), 0))
    for (s in seq_len(nd)) {
      eps <- matrix(stats::rnorm(Ju * q), Ju, q)
      z <- m
      for (a in seq_len(q)) z[, a] <- z[, a] + rowSums(Ca[[a]] * eps)
      if (!is.null(zd) && n_used > 0L) {
        zs <- matrix(zd[sel[s], zoff + seq_len(r$ngroups * q)], r$ngroups, q, byrow = TRUE)
        z[seq_len(n_used), ] <- zs[used, , drop = FALSE]
      }
      b <- z %*% t(matrix(A[s, , ], q, q))
      # a partially centred term's A is A_eff (svir_re_A): a new level's
      # prior draw is b = A z with A = diag(sd) L
      if (!is.null(A0) && Ju > n_used) {
        nw <- seq.int(n_used + 1L, Ju)
        b[nw, ] <- z[nw, , drop = FALSE] %*% t(matrix(A0[s, , ], q, q))
      }
      if (!is.null(U) && n_used > 0L) {
        b[seq_len(n_used), ] <- sweep(b[seq_len(n_used), , drop = FALSE], 2L, U[s, ])
      }
      eta[ok, s] <- eta[ok, s] + rowSums(Zok * b[rok, , drop = FALSE])
    }
    if (!is.null(tm$missing_group)) eta[tm$missing_group, ] <- NA
  }
  eta
}

svir_draw_sel <- function(object, ndraws, replace_ok = FALSE) {
  S <- nrow(object$draws)
  if (is.null(ndraws)) return(seq_len(S))
  if (!is.numeric(ndraws) || length(ndraws) != 1L || is.na(ndraws) || ndraws < 1) {
    cli::cli_abort("{.arg ndraws} must be a positive whole number or NULL (all {S} stored draws).",
                   class = "svir_error", call = NULL)
  }
  ndraws <- as.integer(ndraws)
  if (ndraws <= S) return(unique(round(seq(1, S, length.out = ndraws))))
  if (replace_ok) return(sample.int(S, ndraws, replace = TRUE))
  cli::cli_abort(c("{.arg ndraws} = {ndraws} is more than the {S} stored draws.",
                   "i" = "Refit with {.code svi_control(ndraws = {ndraws})} or ask for fewer."),
                 class = "svir_error", call = NULL)
}

# Type-7 quantiles of each row (as stats::quantile), without a loop over
# rows: one order() of the whole matrix by (row, value).
svir_row_quantiles <- function(m, probs) {
  n <- nrow(m)
  S <- ncol(m)
  bad <- rowSums(is.na(m)) > 0
  m[bad, ] <- 0
  o <- order(row(m), m, method = "radix")
  sorted <- matrix(m[o], nrow = S)  # column i: row i of m, sorted
  out <- vapply(probs, function(p) {
    h <- (S - 1) * p + 1
    lo <- floor(h)
    hi <- min(lo + 1L, S)
    sorted[lo, ] + (h - lo) * (sorted[hi, ] - sorted[lo, ])
  }, numeric(n))
  out <- matrix(out, n, length(probs))
  out[bad, ] <- NA
  out
}

# ---- fitted / residuals ---------------------------------------------------------

#' Fitted values and residuals of a variational GLMM fit
#'
#' `fitted()` returns the mean response at the posterior means of the fixed
#' and random effects (a plug-in: `linkinv(eta)` with `eta` at the posterior
#' means, as lme4 does at its estimates); for binomial models it is the
#' probability of success. `residuals()` compares the observed response with
#' it: `"response"`, `y - mu` (binomial: the observed proportion minus `mu`);
#' `"pearson"`, the response residual divided by the standard deviation of the
#' family at `mu` (gaussian: `sigma`; binomial: `sqrt(mu (1 - mu) / trials)`;
#' Poisson: `sqrt(mu)`; negative binomial: `sqrt(mu + mu^2 / phi)`), with
#' `sigma` and `phi` at their posterior means; `"deviance"`, the signed square
#' roots of the family's unit deviances (as for `glm`, gaussian deviance
#' residuals are not divided by `sigma`).
#'
#' @param object an `svi_fit`.
#' @param type type of residual.
#' @param ... unused.
#' @return A numeric vector named by the rows of the model frame (padded with
#'   `NA` for rows dropped by `na.exclude`).
#' @examples
#' fit <- svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy)
#' head(fitted(fit))
#' head(residuals(fit, type = "pearson"))
#' @method fitted svi_fit
#' @export
fitted.svi_fit <- function(object, ...) {
  mu <- svir_fitted_raw(object)
  names(mu) <- rownames(object$frame)
  svir_napredict(object, mu)
}

svir_fitted_raw <- function(object) {
  des <- svir_design(object, NULL)
  mu <- svir_linkinv(object$family)(svir_eta_mean(object, des))
  if (is.null(object$zi)) mu else mu * (1 - svir_zi_prob(object, object$zi_info$X))
}

svir_napredict <- function(object, x) {
  if (is.null(object$na.action)) x else stats::napredict(object$na.action, x)
}

#' @rdname fitted.svi_fit
#' @method residuals svi_fit
#' @export
residuals.svi_fit <- function(object, type = c("response", "pearson", "deviance"), ...) {
  type <- match.arg(type)
  mu <- svir_fitted_raw(object)
  y <- as.double(object$y)
  fam <- object$family_name
  if (!is.null(object$zi)) return(svir_zi_residuals(object, type, mu, y))
  n_tr <- if (fam == "binomial") {
    if (is.null(object$trials)) rep(1, length(y)) else as.double(object$trials)
  } else NULL
  yy <- if (fam == "binomial") y / n_tr else y
  r <- switch(type,
    response = yy - mu,
    pearson = {
      sdv <- switch(fam,
        gaussian = rep(sigma.svi_fit(object), length(mu)),
        binomial = sqrt(mu * (1 - mu) / n_tr),
        poisson = sqrt(mu),
        negbin = sqrt(mu + mu^2 / sigma.svi_fit(object)))
      (yy - mu) / sdv
    },
    deviance = {
      d <- switch(fam,
        gaussian = (y - mu)^2,
        binomial = stats::binomial()$dev.resids(yy, mu, n_tr),
        poisson = stats::poisson()$dev.resids(y, mu, rep(1, length(y))),
        negbin = {
          phi <- sigma.svi_fit(object)
          2 * (ifelse(y > 0, y * log(y / mu), 0) - (y + phi) * log((y + phi) / (mu + phi)))
        })
      sign(yy - mu) * sqrt(pmax(d, 0))
    })
  names(r) <- rownames(object$frame)
  svir_napredict(object, r)
}

# ---- predict ----------------------------------------------------------------------

#' Predictions from a variational GLMM fit
#'
#' Point predictions at the posterior means of the fixed and random effects
#' (as lme4's `predict()` at its estimates), optionally with posterior
#' credible intervals of the linear predictor or of the mean response.
#'
#' New data are turned into model matrices with the fit's terms, contrasts,
#' factor levels and data-dependent transformations (`poly()`, `scale()`,
#' `ns()`), as `predict.lm()` does, so `predict(fit, newdata = data)` equals
#' `predict(fit)` for the fitting data.
#'
#' With `interval = TRUE` the intervals come from `ndraws` joint draws: the
#' global parameters from the stored posterior draws and, for each, the random
#' effects of each level from its guide `q(z | level)` (levels not in the fit:
#' from `N(0, Sigma)` given the drawn covariance `Sigma`). The column `fit` is
#' the point prediction (the same as with `interval = FALSE`), `lwr` and `upr`
#' the quantiles of the draws. The interval is for the mean (the linear
#' predictor or `linkinv` of it), not for a new observation: use
#' [simulate.svi_fit()] for posterior predictive draws.
#'
#' @param object an `svi_fit`.
#' @param newdata data frame, or `NULL` for the fitting data.
#' @param re.form which random effects to include: `NULL` all, `NA` or `~0`
#'   none (population-level prediction), or a formula of random-effect terms
#'   such as `~ (1 | Subject)`.
#' @param allow.new.levels if `FALSE` (default), levels of a grouping factor
#'   not seen in the fit are an error; if `TRUE` they get a zero random effect
#'   in the point prediction and random effects drawn from the population
#'   distribution for intervals.
#' @param type `"link"` (linear predictor), `"response"` (mean response;
#'   with zero inflation, `(1 - pi) mu`), `"conditional"` (the family's mean
#'   `mu`, without the zero inflation) or `"zprob"` (the probability `pi` of
#'   a structural zero), as glmmTMB's types.
#' @param interval return credible intervals.
#' @param level probability of the intervals.
#' @param ndraws number of posterior draws for the intervals (default: all
#'   stored draws).
#' @param ... unused.
#' @return With `interval = FALSE`, a numeric vector named by the rows of the
#'   data. With `interval = TRUE`, a matrix with columns `fit`, `lwr`, `upr`.
#'   Rows of `newdata` with missing predictors give `NA`.
#' @examples
#' fit <- svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy)
#' nd <- data.frame(Days = 0:9, Subject = "308")
#' predict(fit, nd)
#' predict(fit, nd, re.form = NA, interval = TRUE)
#' predict(fit, data.frame(Days = 1, Subject = "new"), allow.new.levels = TRUE)
#' @method predict svi_fit
#' @export
predict.svi_fit <- function(object, newdata = NULL, re.form = NULL, allow.new.levels = FALSE,
                            type = c("link", "response", "conditional", "zprob"),
                            interval = FALSE, level = 0.95, ndraws = NULL, ...) {
  type <- match.arg(type)
  svir_check_flag(allow.new.levels, "allow.new.levels")
  svir_check_flag(interval, "interval")
  probs <- svir_probs(level, "level")[c(1L, 3L)]
  keep <- svir_re_keep(object, re.form)
  des <- svir_design(object, newdata, keep, allow.new.levels)
  eta <- svir_eta_mean(object, des)
  linkinv <- svir_linkinv(object$family)
  Xz <- if (is.null(object$zi)) NULL else svir_zi_newdata(object, newdata)
  fit <- switch(type,
    link = eta,
    conditional = linkinv(eta),
    response = if (is.null(Xz)) linkinv(eta) else linkinv(eta) * (1 - svir_zi_prob(object, Xz)),
    zprob = if (is.null(Xz)) rep(0, length(eta)) else svir_zi_prob(object, Xz))
  names(fit) <- des$rownames
  if (!isTRUE(interval)) {
    return(if (is.null(newdata)) svir_napredict(object, fit) else fit)
  }
  sel <- svir_draw_sel(object, ndraws)
  # rows in chunks, so that the n x ndraws matrix of draws stays small
  chunk <- max(1L, floor(2e7 / length(sel)))
  starts <- seq(1L, max(des$n, 1L), by = chunk)
  q <- matrix(NA_real_, des$n, 2L)
  for (st in starts) {
    rows <- st:min(des$n, st + chunk - 1L)
    if (!length(rows) || des$n == 0L) break
    E <- if (type == "zprob") NULL else svir_eta_draws(object, svir_design_rows(des, rows), sel)
    Pz <- if (is.null(Xz) || type %in% c("link", "conditional")) NULL else
      svir_zi_prob_draws(object, Xz[rows, , drop = FALSE], sel)
    E <- switch(type,
      link = E,
      conditional = linkinv(E),
      response = if (is.null(Pz)) linkinv(E) else linkinv(E) * (1 - Pz),
      zprob = if (is.null(Pz)) matrix(0, length(rows), length(sel)) else Pz)
    q[rows, ] <- svir_row_quantiles(E, probs)
  }
  out <- cbind(fit = fit, lwr = q[, 1L], upr = q[, 2L])
  rownames(out) <- des$rownames
  if (is.null(newdata) && !is.null(object$na.action)) {
    out <- stats::napredict(object$na.action, out)
  }
  out
}

# ---- simulate -------------------------------------------------------------------

#' Simulate responses from the posterior predictive distribution
#'
#' Each simulation takes one posterior draw of the global parameters (from the
#' stored draws) and of the random effects (from the guide of each level, or,
#' with `re.form = NA`, new random effects from `N(0, Sigma)` for every level,
#' like lme4's default) and draws a response for every observation: gaussian
#' `rnorm(mu, sigma)`, binomial `rbinom(trials, mu)` (the number of successes;
#' for new data without the response, one trial), Poisson `rpois(mu)`,
#' negative binomial `rnbinom(size = phi, mu = mu)`; with zero inflation, a
#' structural zero with the draw's probability `pi` instead.
#'
#' @param object an `svi_fit`.
#' @param nsim number of simulations.
#' @param seed `NULL` or an integer for [set.seed()], as in
#'   [stats::simulate()]; the generator state is restored afterwards.
#' @param newdata data frame, or `NULL` for the fitting data.
#' @param re.form `NULL` (condition on the fitted random effects) or `NA`
#'   (new random effects for every level).
#' @param allow.new.levels as in [predict.svi_fit()].
#' @param ... unused.
#' @return A data.frame with columns `sim_1`, ..., `sim_<nsim>` and the
#'   attribute `"seed"`, as [stats::simulate()] returns.
#' @examples
#' fit <- svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy)
#' s <- simulate(fit, nsim = 3, seed = 1)
#' head(s)
#' @method simulate svi_fit
#' @export
simulate.svi_fit <- function(object, nsim = 1, seed = NULL, newdata = NULL, re.form = NULL,
                             allow.new.levels = FALSE, ...) {
  svir_check_flag(allow.new.levels, "allow.new.levels")
  rng <- svir_sim_seed(seed)
  if (!is.null(rng$old)) on.exit(assign(".Random.seed", rng$old, envir = .GlobalEnv))
  rng_state <- rng$state
  nsim <- as.integer(nsim)
  if (length(nsim) != 1L || is.na(nsim) || nsim < 1L) {
    cli::cli_abort("{.arg nsim} must be a positive whole number.", class = "svir_error", call = NULL)
  }
  new_all <- FALSE
  if (!is.null(re.form)) {
    if (!(length(re.form) == 1L && is.na(re.form))) {
      cli::cli_abort("{.arg re.form} must be NULL or NA for {.fn simulate}.", class = "svir_error", call = NULL)
    }
    new_all <- TRUE
  }
  des <- svir_design(object, newdata, rep(TRUE, length(object$re)),
                     allow.new.levels = allow.new.levels || new_all)
  S <- nrow(object$draws)
  sel <- if (nsim <= S) sample.int(S, nsim) else sample.int(S, nsim, replace = TRUE)
  E <- svir_eta_draws(object, des, sel, new_all = new_all)
  mu <- svir_linkinv(object$family)(E)
  n <- des$n
  fam <- object$family_name
  trials <- svir_sim_trials(object, newdata, n)
  Pz <- if (is.null(object$zi)) NULL else
    svir_zi_prob_draws(object, svir_zi_newdata(object, newdata), sel)
  sims <- lapply(seq_len(nsim), function(i) {
    m <- mu[, i]
    s <- sel[i]
    y <- switch(fam,
      gaussian = stats::rnorm(n, m, object$draws[s, "sigma"]),
      binomial = stats::rbinom(n, trials, m),
      poisson = stats::rpois(n, m),
      negbin = stats::rnbinom(n, size = object$draws[s, "phi"], mu = m))
    # structural zeros of the zero inflation
    if (!is.null(Pz)) y[stats::runif(n) < Pz[, i]] <- 0
    y
  })
  out <- as.data.frame(sims, optional = TRUE)
  names(out) <- paste0("sim_", seq_len(nsim))
  rownames(out) <- des$rownames
  if (is.null(newdata) && !is.null(object$na.action) && inherits(object$na.action, "exclude")) {
    out <- as.data.frame(lapply(out, function(v) stats::napredict(object$na.action, v)))
  }
  attr(out, "seed") <- rng_state
  out
}

# Binomial trials of the rows a draw is simulated for (NULL for other
# families): the fit's, or new data's (svir_newdata_trials).
svir_sim_trials <- function(object, newdata, n) {
  if (object$family_name != "binomial") return(NULL)
  if (!is.null(newdata)) return(svir_newdata_trials(object, newdata))
  if (is.null(object$trials)) rep(1, n) else as.double(object$trials)
}

# Binomial trials for new data: from the response if newdata has it, else 1.
svir_newdata_trials <- function(object, newdata) {
  lhs <- object$formula[[2L]]
  y <- tryCatch(eval(lhs, newdata, environment(object$formula)), error = function(e) NULL)
  if (is.matrix(y) && ncol(y) == 2L) return(as.double(y[, 1L] + y[, 2L]))
  rep(1, nrow(newdata))
}

# residuals() of a zero-inflated fit: response y - (1 - pi) mu, Pearson's
# divided by the zero-inflated family's sd, sqrt((1 - pi) (v + mu^2) -
# ((1 - pi) mu)^2) with v the family's variance at mu; no deviance
# residuals (as glmmTMB)
svir_zi_residuals <- function(object, type, ey, y) {
  pz <- svir_zi_prob(object, object$zi_info$X)
  mu <- ey / (1 - pz)
  r <- switch(type,
    response = y - ey,
    pearson = {
      v <- if (object$family_name == "negbin") mu + mu^2 / sigma.svi_fit(object) else mu
      (y - ey) / sqrt((1 - pz) * (v + mu^2) - ey^2)
    },
    deviance = cli::cli_abort(c("Deviance residuals are not defined for a zero-inflated fit.",
                                i = "Use {.code type = \"response\"} or {.code \"pearson\"}."),
                              class = "svir_error", call = NULL))
  names(r) <- rownames(object$frame)
  svir_napredict(object, r)
}

# simulate()'s seed, as stats::simulate() has it: NULL keeps R's stream
# (state: the .Random.seed it starts from), a number seeds it (state: the
# seed with RNGkind()) and `old` is the .Random.seed to put back after.
svir_sim_seed <- function(seed) {
  if (!exists(".Random.seed", envir = .GlobalEnv, inherits = FALSE)) stats::runif(1)
  if (is.null(seed)) return(list(state = get(".Random.seed", envir = .GlobalEnv), old = NULL))
  old <- get(".Random.seed", envir = .GlobalEnv)
  set.seed(seed)
  list(state = structure(seed, kind = as.list(RNGkind())), old = old)
}
