# summary() and the posterior summaries shared by print(), summary(),
# VarCorr() and sigma().

# Posterior summary rows: Estimate (mean), Est.Error (sd) and quantiles.
svir_quantile_names <- function(probs) {
  paste0("Q", as.character(signif(100 * probs, 6)))
}

svir_probs <- function(prob, arg = "prob") {
  if (!is.numeric(prob) || length(prob) != 1L || is.na(prob) || prob <= 0 || prob >= 1) {
    cli::cli_abort(c("{.arg {arg}} must be a single probability between 0 and 1, such as 0.95.",
                     x = "You supplied {.code {deparse1(prob)}}."),
                   class = "svir_error", call = NULL)
  }
  c((1 - prob) / 2, 0.5, 1 - (1 - prob) / 2)
}

# Column names of interval limits at probabilities `probs`, as confint.lm()
# names them ("2.5 %", "97.5 %").
svir_pct_names <- function(probs) {
  paste(format(100 * probs, trim = TRUE, scientific = FALSE, digits = 3), "%")
}

# Summary of draws (matrix, one column per parameter).
svir_draws_table <- function(d, probs) {
  d <- as.matrix(d)
  q <- t(apply(d, 2L, stats::quantile, probs = probs, names = FALSE, na.rm = TRUE))
  if (ncol(d) == 0L) q <- matrix(numeric(0), 0L, length(probs))
  out <- data.frame(Estimate = colMeans(d), Est.Error = apply(d, 2L, stats::sd),
                    q, check.names = FALSE)
  names(out)[-(1:2)] <- svir_quantile_names(probs)
  rownames(out) <- colnames(d)
  out
}

# Exact summary of a normal marginal, optionally through y = a * exp(x).
svir_normal_table <- function(mean, sd, probs, names, exp_scale = NULL) {
  if (is.null(exp_scale)) {
    est <- mean
    err <- sd
    q <- outer(sd, stats::qnorm(probs)) + mean
  } else {
    est <- exp_scale * exp(mean + sd^2 / 2)
    err <- est * sqrt(expm1(sd^2))
    q <- exp_scale * exp(outer(sd, stats::qnorm(probs)) + mean)
  }
  q <- matrix(q, ncol = length(probs))
  out <- data.frame(Estimate = est, Est.Error = err, q, check.names = FALSE)
  names(out)[-(1:2)] <- svir_quantile_names(probs)
  rownames(out) <- names
  out
}

# Posterior summaries of all global parameters in natural units, one
# data.frame per block. Fixed effects, sds, sigma and phi are exact under the
# Gaussian guide (affine map, or exp of a Gaussian coordinate); correlations
# come from the stored draws.
svir_global_tables <- function(object, probs = c(0.025, 0.5, 0.975)) {
  if (identical(object$method, "laplace")) return(svir_draws_global_tables(object, probs))
  idx <- object$index
  eng <- object$engine
  ys <- object$scaling$y_scale
  fx <- object$fixef
  fixed <- svir_normal_table(fx$mean, sqrt(pmax(diag(fx$vcov), 0)), probs, names(fx$mean))
  # separated coefficients: their grid marginals (R/separation.R)
  for (mg in object$separation$marginal) {
    fixed[mg$coef, -(1:2)] <- svir_sep_quantile(mg, probs)
  }
  re <- object$re
  dn <- colnames(object$draws)
  sd_tabs <- lapply(seq_along(re), function(t) {
    k <- idx$sd[[t]]
    svir_normal_table(eng$mu[k], svir_guide_sd(eng, k), probs,
                      paste0("sd(", svir_pretty_cnm(re[[t]]$cnms), ")"), exp_scale = ys)
  })
  cor_tabs <- lapply(seq_along(re), function(t) {
    if (is.null(idx$cpc[[t]])) return(NULL)
    cn <- svir_pretty_cnm(re[[t]]$cnms)
    ij <- svir_lower_pairs(length(cn))
    cols <- paste0("cor_", re[[t]]$grpvar, "__", re[[t]]$cnms[ij[, 2]], "__", re[[t]]$cnms[ij[, 1]])
    cols <- intersect(cols, dn)
    tab <- svir_draws_table(object$draws[, cols, drop = FALSE], probs)
    rownames(tab) <- paste0("cor(", cn[ij[, 2]], ",", cn[ij[, 1]], ")")
    tab
  })
  aux <- NULL
  if (!is.na(idx$sigma)) {
    aux <- rbind(aux, svir_normal_table(eng$mu[idx$sigma], svir_guide_sd(eng, idx$sigma),
                                        probs, "sigma", exp_scale = ys))
  }
  if (!is.na(idx$phi)) {
    aux <- rbind(aux, svir_normal_table(eng$mu[idx$phi], svir_guide_sd(eng, idx$phi),
                                        probs, "phi", exp_scale = 1))
  }
  zi <- NULL
  if (!is.null(object$zi)) {
    zi <- svir_normal_table(object$zi$mean, sqrt(pmax(diag(object$zi$vcov), 0)), probs,
                            names(object$zi$mean))
  }
  list(fixed = fixed, sd = sd_tabs, cor = cor_tabs, aux = aux, zi = zi)
}

# The same tables from the posterior draws alone (method "laplace", whose
# draws are the importance sampler's, resampled: no Gaussian form).
svir_draws_global_tables <- function(object, probs) {
  d <- object$draws
  dn <- colnames(d)
  re <- object$re
  fixed <- svir_draws_table(d[, colnames(object$X), drop = FALSE], probs)
  sd_tabs <- lapply(seq_along(re), function(t) {
    cols <- paste0("sd_", re[[t]]$grpvar, "__", re[[t]]$cnms)
    tab <- svir_draws_table(d[, cols, drop = FALSE], probs)
    rownames(tab) <- paste0("sd(", svir_pretty_cnm(re[[t]]$cnms), ")")
    tab
  })
  cor_tabs <- lapply(seq_along(re), function(t) {
    if (is.null(object$index$cpc[[t]])) return(NULL)
    cn <- svir_pretty_cnm(re[[t]]$cnms)
    ij <- svir_lower_pairs(length(cn))
    cols <- paste0("cor_", re[[t]]$grpvar, "__", re[[t]]$cnms[ij[, 2]], "__", re[[t]]$cnms[ij[, 1]])
    cols <- intersect(cols, dn)
    tab <- svir_draws_table(d[, cols, drop = FALSE], probs)
    rownames(tab) <- paste0("cor(", cn[ij[, 2]], ",", cn[ij[, 1]], ")")
    tab
  })
  aux_cols <- intersect(c("sigma", "phi"), dn)
  aux <- if (length(aux_cols)) svir_draws_table(d[, aux_cols, drop = FALSE], probs) else NULL
  list(fixed = fixed, sd = sd_tabs, cor = cor_tabs, aux = aux, zi = NULL)
}

svir_pretty_cnm <- function(x) {
  x[x == "(Intercept)"] <- "Intercept"
  x
}

# Posterior means of sd and correlation matrix per term (VarCorr, print).
svir_re_point <- function(object) {
  tabs <- svir_global_tables(object)
  re <- object$re
  lapply(seq_along(re), function(t) {
    cn <- re[[t]]$cnms
    q <- length(cn)
    sd <- stats::setNames(tabs$sd[[t]]$Estimate, cn)
    R <- diag(q)
    if (!is.null(tabs$cor[[t]])) {
      ij <- svir_lower_pairs(q)
      R[ij] <- tabs$cor[[t]]$Estimate
      R[ij[, 2:1, drop = FALSE]] <- tabs$cor[[t]]$Estimate
    }
    dimnames(R) <- list(cn, cn)
    list(sd = sd, cor = R)
  })
}

# Levels per grouping factor, in order of first appearance (lme4's ngrps).
svir_ngrps <- function(object) {
  re <- object$re
  if (!length(re)) return(integer(0))
  g <- vapply(re, `[[`, "", "grpvar")
  n <- vapply(re, function(r) length(r$levels), 1L)
  stats::setNames(n[!duplicated(g)], g[!duplicated(g)])
}

svir_elbo_final <- function(object) {
  if (!is.null(object$engine$elbo_final) && is.finite(object$engine$elbo_final))
    return(as.double(object$engine$elbo_final))
  e <- object$elbo
  e <- e[is.finite(e)]
  if (!length(e)) return(NA_real_)
  w <- object$control$eval_every
  if (is.null(w) || !is.finite(w) || w < 1) w <- 100L
  mean(e[max(1L, length(e) - w + 1L):length(e)])
}

svir_data_name <- function(object) {
  d <- object$call$data
  if (is.null(d)) return(NULL)
  paste(deparse(d, width.cutoff = 500L), collapse = " ")
}

svir_stop_line <- function(object) {
  if (identical(object$method, "laplace")) return(svir_laplace_line(object))
  reason <- object$stop_reason
  why <- switch(reason %||% "",
    converged = "converged",
    max_steps = "reached max_steps",
    diverged = "DIVERGED",
    interrupted = "interrupted by the user",
    if (is.na(reason)) "unknown" else reason)
  tm <- object$time
  ws <- object$engine$warm_start
  steps <- as.integer(object$steps) + if (is.null(ws)) 0L else as.integer(ws$steps)
  per <- if (is.finite(tm) && steps > 0) sprintf(", %.3g ms/step", 1000 * tm / steps) else ""
  sprintf("%s after %d steps%s (%s%s)", why, as.integer(object$steps),
          if (is.null(ws)) "" else sprintf(" from a mean-field start of %d", as.integer(ws$steps)),
          if (is.finite(tm)) sprintf("%.3g s", tm) else "time unknown", per)
}

`%||%` <- function(a, b) if (is.null(a)) b else a

#' Summarise a variational GLMM fit
#'
#' Posterior summaries in the style of brms: `Estimate` (posterior mean),
#' `Est.Error` (posterior standard deviation) and quantiles, for the fixed
#' effects, the random-effect standard deviations and correlations (grouped by
#' grouping factor) and `sigma` (gaussian) or `phi` (negative binomial). The
#' posterior is the variational approximation: fixed effects, standard
#' deviations, `sigma` and `phi` are summarised exactly under it (they are
#' affine maps or exponentials of its Gaussian coordinates), correlations from
#' the stored draws.
#'
#' @param object an `svi_fit`.
#' @param prob width of the central interval (default 0.95: columns `Q2.5`,
#'   `Q50`, `Q97.5`).
#' @param ... unused.
#' @return An object of class `summary.svi_fit`: a list with `fixed`,
#'   `random` (list per grouping factor of data.frames), `spec_pars` (sigma /
#'   phi), `zi` (the zero-inflation coefficients, or `NULL`), `ngrps`, `nobs`, `elbo`, `stop_reason`, `steps`, `time`, `khat`, `separation` (coefficients the data do not bound, or `NULL`) and
#'   information on the model.
#' @examples
#' fit <- svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy)
#' summary(fit)
#' @method summary svi_fit
#' @export
summary.svi_fit <- function(object, prob = 0.95, ...) {
  probs <- svir_probs(prob)
  tabs <- svir_global_tables(object, probs)
  g <- vapply(object$re, `[[`, "", "grpvar")
  random <- lapply(unique(g), function(gv) {
    ts <- which(g == gv)
    do.call(rbind, c(tabs$sd[ts], tabs$cor[ts]))
  })
  names(random) <- unique(g)
  out <- list(
    formula = object$formula,
    data_name = svir_data_name(object),
    family = object$family,
    method = object$method,
    method_reason = object$method_reason,
    centre_text = svir_centre_text(object),
    qem_line = svir_qem_plan_line(object),
    laplace = object$laplace,
    guide = object$guide,
    backend = object$backend,
    backend_reason = object$backend_reason,
    nobs = object$nobs,
    ngrps = svir_ngrps(object),
    fixed = tabs$fixed,
    random = random,
    spec_pars = tabs$aux,
    zi = tabs$zi,
    ziformula = object$zi_info$formula,
    prob = prob,
    elbo = svir_elbo_final(object),
    elbo_window = object$control$eval_every %||% 100L,
    stop_reason = object$stop_reason,
    stop_line = svir_stop_line(object),
    steps = object$steps,
    time = object$time,
    khat = object$khat,
    separation = object$separation,
    ndraws = nrow(object$draws)
  )
  class(out) <- "summary.svi_fit"
  out
}

#' @rdname summary.svi_fit
#' @param x a `summary.svi_fit` object.
#' @param digits number of significant digits.
#' @method print summary.svi_fit
#' @export
print.summary.svi_fit <- function(x, digits = max(3L, getOption("digits") - 3L), ...) {
  cat(svir_title(x$method), "\n", sep = "")
  svir_cat_header(x$family, x$formula, x$data_name, x$method, x$guide,
                  x$backend, x$backend_reason, x$method_reason, x$centre_text)
  if (!is.null(x$qem_line)) cat("  ", x$qem_line, "\n", sep = "")
  cat(svir_nobs_line(x$nobs, x$ngrps), "\n", sep = "")
  if (length(x$random)) {
    cat("\nGroup-level effects:\n")
    for (g in names(x$random)) {
      cat("~", g, " (Number of levels: ", x$ngrps[[g]], ")\n", sep = "")
      print(x$random[[g]], digits = digits)
      cat("\n")
    }
  } else cat("\n")
  cat("Population-level effects:\n")
  print(x$fixed, digits = digits)
  if (!is.null(x$zi)) {
    cat("\nZero-inflation model (", paste(deparse(x$ziformula, width.cutoff = 500L), collapse = " "),
        "; logit of the probability of a structural zero):\n", sep = "")
    print(x$zi, digits = digits)
  }
  if (!is.null(x$spec_pars)) {
    cat("\nFamily-specific parameters:\n")
    print(x$spec_pars, digits = digits)
  }
  if (identical(x$method, "laplace")) {
    cat("\n", x$stop_line, "\n", sep = "")
  } else {
    cat("\nELBO: ", format(x$elbo, digits = max(digits, 6L)),
        " (mean of the last ", x$elbo_window, " steps); ", x$stop_line, "\n", sep = "")
  }
  if (identical(x$stop_reason, "diverged")) {
    cat("Warning: the optimisation diverged; the estimates are not reliable.\n")
  } else if (identical(x$stop_reason, "max_steps")) {
    cat("Note: the ELBO had not settled by max_steps; consider increasing it.\n")
  }
  cat("PSIS k-hat: ", svir_khat_message(x$khat, x$method), "\n", sep = "")
  advice <- svir_trust_advice(x$khat, x$method, x$laplace, x$guide)
  if (!is.null(advice)) cat(advice, "\n", sep = "")
  if (!is.null(x$separation)) cat("Separation: ", svir_separation_message(x$separation), ".\n", sep = "")
  if (identical(x$method, "laplace")) {
    cat("Summaries are from ", x$ndraws, " draws resampled by their importance weights.\n", sep = "")
  } else if (any(grepl("^cor\\(", unlist(lapply(x$random, rownames))))) {
    cat("Correlations are summarised from ", x$ndraws, " draws of the variational posterior.\n", sep = "")
  }
  invisible(x)
}

svir_title <- function(method) {
  how <- if (identical(method, "qem")) {
    "massively parallel EM of approximate posteriors (QEM)"
  } else if (identical(method, "laplace")) {
    "Laplace-guided importance sampling"
  } else {
    "stochastic variational inference"
  }
  paste0("Bayesian GLMM fit by ", how, " (svir)")
}

svir_cat_header <- function(family, formula, data_name, method, guide, backend, reason,
                            method_reason = NULL, centre = NULL) {
  fam <- family$family %||% "?"
  cat(" Family: ", fam, "  ( ", family$link %||% "?", " )\n", sep = "")
  if (!is.null(formula)) cat("Formula: ", paste(deparse(formula, width.cutoff = 500L), collapse = " "), "\n", sep = "")
  if (!is.null(data_name)) cat("   Data: ", data_name, "\n", sep = "")
  how <- if (identical(method, "laplace")) {
    # the random effects are integrated out at each draw of the globals, so
    # no parameterisation of them is chosen
    "Laplace proposal, PSIS weights; random effects integrated out, so not parameterised"
  } else {
    paste0("guide: ", guide %||% "?", "; ", centre)
  }
  cat(" Method: ", method %||% "svi", " (", how, "); backend: ", backend %||% "?",
      if (!is.null(reason) && !is.na(reason) && nzchar(reason)) paste0(" (", reason, ")"), "\n", sep = "")
  if (!is.null(method_reason) && !identical(method_reason, "given by the user")) {
    cat("  Chosen by method = \"auto\": ", method_reason, "\n", sep = "")
  }
}

# The random effects' parameterisation in words: QEM's proposals are on z
# (non-centred); SVI's terms are partially centred with the weights
# svi_control(centre = ) chose (svir_centring() in R/start.R).
svir_centre_text <- function(object, method = object$method) {
  if (!identical(method, "svi")) {
    return("random effects non-centred (z = b / sd)")
  }
  lam <- object$centre
  if (is.null(lam) || all(lam == 0)) {
    why <- if (identical(object$control$centre, "none")) "centre = \"none\"" else if (identical(object$backend, "cuda"))
      "the device has no centred step" else "the data gave 0 for every term, or each is in a nested pair"
    return(paste0("random effects non-centred (z = b / sd; ", why, ")"))
  }
  g <- vapply(object$re, `[[`, "", "grpvar")
  qs <- vapply(object$re, function(r) length(r$cnms), 1L)
  paste0("random effects partially centred, u = b / sd^(1 - lambda)",
         if (any(qs > 1L & lam != 0)) " (b = D^-lambda ((1 - lambda) A + lambda D) u for a term of several columns, A = D L, D = diag(sd))",
         ", lambda: ",
         paste(sprintf("%s %.2f", g, lam), collapse = ", "),
         if (identical(object$control$centre, "auto")) " (each the median share of a level's precision from its data)"
         else if (identical(object$control$centre, "learn")) " (learned by the ELBO's gradient from the median share of a level's precision)"
         else " (given)")
}

# QEM's tree for more than one grouping factor (svir_qem_plan() in R/fit.R),
# in words, or NULL
svir_qem_plan_line <- function(object) {
  plan <- object$qem_plan
  if (is.null(plan) || !identical(object$method, "qem")) return(NULL)
  g <- vapply(object$re, `[[`, "", "grpvar")
  s <- paste0("QEM's tree: ", paste(g[plan$chain], collapse = " > "),
              if (length(plan$chain) > 1L) " (nested: weighed as a tree of plates)" else " (plates)")
  if (length(plan$crossed)) {
    s <- paste0(s, "; crossed with it, weighed with the globals: ",
                paste(unique(g[plan$crossed]), collapse = ", "))
  }
  s
}

svir_nobs_line <- function(nobs, ngrps) {
  s <- paste0("Number of obs: ", nobs)
  if (length(ngrps)) {
    s <- paste0(s, ", groups:  ", paste(names(ngrps), ngrps, sep = ", ", collapse = "; "))
  }
  s
}

#' Posterior intervals of a variational GLMM fit
#'
#' Equal-tailed posterior (credible) intervals of the global parameters in
#' their natural units: the fixed effects, the random effects' standard
#' deviations and correlations, sigma or phi, and the zero-inflation
#' coefficients, as in [summary.svi_fit()].
#'
#' @param object An `svi_fit`.
#' @param parm Parameters: a character vector of row names, or their
#'   indices; all when missing.
#' @param level The probability of each interval.
#' @param ... Unused.
#' @return A matrix with one row per parameter and two columns, named as
#'   [stats::confint()] names them (e.g. `"2.5 %"` and `"97.5 %"`). Rows:
#'   the fixed effects' names, `sd(<term> | <group>)`, `cor(<a>,<b> |
#'   <group>)`, `sigma`, `phi`, and `zi~<name>` for the zero inflation.
#' @examples
#' fit <- svi_fit(Reaction ~ Days + (Days | Subject), data = lme4::sleepstudy,
#'                seed = 1)
#' confint(fit)
#' confint(fit, "Days", level = 0.9)
#' @export
confint.svi_fit <- function(object, parm, level = 0.95, ...) {
  probs <- svir_probs(level, "level")[c(1L, 3L)]
  tabs <- svir_global_tables(object, probs)
  re <- object$re
  with_group <- function(tab, g) {
    if (is.null(tab)) return(NULL)
    rownames(tab) <- sub("\\)$", paste0(" | ", g, ")"), rownames(tab))
    tab
  }
  grp <- vapply(re, `[[`, "", "grpvar")
  parts <- c(list(tabs$fixed), Map(with_group, tabs$sd, grp), Map(with_group, tabs$cor, grp),
             list(tabs$aux))
  if (!is.null(tabs$zi)) {
    rownames(tabs$zi) <- paste0("zi~", rownames(tabs$zi))
    parts <- c(parts, list(tabs$zi))
  }
  all <- do.call(rbind, parts[!vapply(parts, is.null, TRUE)])
  ci <- as.matrix(all[, 3:4, drop = FALSE])
  colnames(ci) <- svir_pct_names(probs)
  if (missing(parm)) return(ci)
  bad <- if (is.character(parm)) setdiff(parm, rownames(ci)) else
    parm[!(is.numeric(parm) & parm >= 1 & parm <= nrow(ci) & parm == round(parm))]
  if (length(bad) || !length(parm)) {
    cli::cli_abort(c("{.arg parm} must name parameters of the fit, or give their indices.",
                     x = "Not found: {.val {format(bad)}}.",
                     i = "The parameters: {.val {rownames(ci)}}."),
                   class = "svir_error", call = NULL)
  }
  ci[parm, , drop = FALSE]
}
