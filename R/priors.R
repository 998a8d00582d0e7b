# Priors: distribution helpers, svi_prior(), default priors, the prior table
# and the prior arrays in the engine's internal units (dev/ARCHITECTURE.md, section 6).

# ---- distribution helpers ---------------------------------------------------

svir_check_number <- function(x, arg, fun, positive = TRUE) {
  ok <- is.numeric(x) && length(x) == 1L && !is.na(x) && is.finite(x) &&
    (!positive || x > 0)
  if (!ok) {
    what <- if (positive) "a finite number greater than 0" else "a finite number"
    cli::cli_abort(
      c("{.arg {arg}} of {.fun {fun}} must be {what}.",
        "x" = "You supplied {.code {deparse1(x)}}."),
      class = "svir_error", call = NULL
    )
  }
  as.double(x)
}

new_svir_dist <- function(dist, df = NA_real_, location = NA_real_, scale = NA_real_,
                          rate = NA_real_, eta = NA_real_) {
  structure(
    list(dist = dist, df = df, location = location, scale = scale, rate = rate, eta = eta),
    class = "svir_dist"
  )
}

#' Prior distributions
#'
#' Constructors for the prior distributions accepted by [svi_prior()]. All
#' parameters are on the scale of the data as the user sees it (the original
#' units of the response and the predictors), never on svir's internal
#' standardised scale.
#'
#' * `normal(location, scale)`: normal distribution.
#' * `student_t(df, location, scale)`: Student-t distribution.
#' * `half_normal(scale)`, `half_student_t(df, scale)`: the normal and
#'   Student-t distributions with location 0, truncated to positive values
#'   (for standard deviations, `sigma` and `phi`).
#' * `exponential(rate)`: exponential distribution with mean `1 / rate`.
#' * `lkj(eta)`: LKJ distribution on a correlation matrix; `eta = 1` is
#'   uniform over correlation matrices, `eta > 1` favours weaker correlations.
#' * `flat()`: an improper flat prior (fixed effects and the intercept only).
#'
#' @param location Location (mean for the normal).
#' @param scale Scale, greater than 0 (standard deviation for the normal).
#' @param df Degrees of freedom, greater than 0.
#' @param rate Rate, greater than 0.
#' @param eta Shape of the LKJ distribution, greater than 0.
#' @return An object of class `"svir_dist"`.
#' @seealso [svi_prior()]
#' @examples
#' normal(0, 10)
#' student_t(3, 0, 2.5)
#' half_normal(5)
#' exponential(0.1)
#' lkj(2)
#' @name svir_dist
NULL

#' @rdname svir_dist
#' @export
normal <- function(location = 0, scale = 1) {
  new_svir_dist("normal",
    location = svir_check_number(location, "location", "normal", positive = FALSE),
    scale = svir_check_number(scale, "scale", "normal")
  )
}

#' @rdname svir_dist
#' @export
student_t <- function(df = 3, location = 0, scale = 1) {
  new_svir_dist("student_t",
    df = svir_check_number(df, "df", "student_t"),
    location = svir_check_number(location, "location", "student_t", positive = FALSE),
    scale = svir_check_number(scale, "scale", "student_t")
  )
}

#' @rdname svir_dist
#' @export
half_normal <- function(scale = 1) {
  new_svir_dist("half_normal", location = 0,
    scale = svir_check_number(scale, "scale", "half_normal"))
}

#' @rdname svir_dist
#' @export
half_student_t <- function(df = 3, scale = 1) {
  new_svir_dist("half_student_t",
    df = svir_check_number(df, "df", "half_student_t"),
    location = 0,
    scale = svir_check_number(scale, "scale", "half_student_t")
  )
}

#' @rdname svir_dist
#' @export
exponential <- function(rate = 1) {
  new_svir_dist("exponential", rate = svir_check_number(rate, "rate", "exponential"))
}

#' @rdname svir_dist
#' @export
lkj <- function(eta = 1) {
  new_svir_dist("lkj", eta = svir_check_number(eta, "eta", "lkj"))
}

#' @rdname svir_dist
#' @export
flat <- function() {
  new_svir_dist("flat")
}

svir_num_str <- function(x) sprintf("%.4g", x)

#' @rdname svir_dist
#' @param x An object of class `"svir_dist"`.
#' @param ... Unused.
#' @export
format.svir_dist <- function(x, ...) {
  args <- switch(x$dist,
    normal = c(x$location, x$scale),
    student_t = c(x$df, x$location, x$scale),
    half_normal = x$scale,
    half_student_t = c(x$df, x$scale),
    exponential = x$rate,
    lkj = x$eta,
    flat = numeric()
  )
  paste0(x$dist, "(", paste(svir_num_str(args), collapse = ", "), ")")
}

#' @rdname svir_dist
#' @export
print.svir_dist <- function(x, ...) {
  cat(format(x), "\n", sep = "")
  invisible(x)
}

# ---- svi_prior ----------------------------------------------------------------

# Which distributions each class accepts.
svir_prior_allowed <- list(
  intercept = c("normal", "student_t", "flat"),
  b = c("normal", "student_t", "flat"),
  sd = c("half_normal", "half_student_t", "exponential"),
  cor = "lkj",
  sigma = c("half_normal", "half_student_t", "exponential"),
  phi = c("half_normal", "half_student_t", "exponential"),
  zi = c("normal", "student_t", "flat")
)

svir_prior_hint <- list(
  intercept = "normal() or student_t(), e.g. {.code intercept = student_t(3, 0, 10)}",
  b = "normal() or student_t(), e.g. {.code b = normal(0, 5)}, or a named list of them per coefficient",
  sd = "half_normal(), half_student_t() or exponential(), e.g. {.code sd = half_normal(5)}",
  cor = "lkj(), e.g. {.code cor = lkj(2)}",
  sigma = "half_normal(), half_student_t() or exponential(), e.g. {.code sigma = exponential(1)}",
  phi = "half_normal(), half_student_t() or exponential(), e.g. {.code phi = exponential(0.1)}",
  zi = "normal() or student_t(), e.g. {.code zi = normal(0, 2.5)}, or a named list of them per coefficient"
)

# Validates one distribution for a class; maps normal/student_t with location
# 0 to the half versions for positive parameters.
svir_validate_dist <- function(d, arg, label = arg) {
  hint <- svir_prior_hint[[arg]]
  if (!inherits(d, "svir_dist")) {
    cli::cli_abort(
      c("{.arg {label}} must be a prior distribution.",
        "i" = paste0("Use ", hint, " (or {.code NULL} for the default).")),
      class = "svir_error", call = NULL
    )
  }
  positive <- arg %in% c("sd", "sigma", "phi")
  if (positive && d$dist %in% c("normal", "student_t")) {
    if (d$location != 0) {
      cli::cli_abort(
        c("{.arg {label}} is a positive parameter: its prior {.code {format(d)}} must have location 0.",
          "i" = "A {.fun {d$dist}} prior with location 0 is taken as the half distribution; or use {.fun half_{d$dist}}."),
        class = "svir_error", call = NULL
      )
    }
    d <- if (d$dist == "normal") half_normal(d$scale) else half_student_t(d$df, d$scale)
  }
  if (!d$dist %in% svir_prior_allowed[[arg]]) {
    cli::cli_abort(
      c("{.arg {label}} does not accept a {.fun {d$dist}} prior.",
        "i" = paste0("Use ", hint, ".")),
      class = "svir_error", call = NULL
    )
  }
  d
}

# Validates a class argument: NULL, a svir_dist or (b, sd, cor) a named list.
svir_validate_prior_arg <- function(x, arg) {
  if (is.null(x)) return(NULL)
  if (inherits(x, "svir_dist")) return(svir_validate_dist(x, arg))
  if (is.list(x) && arg %in% c("b", "sd", "cor", "zi")) {
    nm <- names(x)
    key <- if (arg %in% c("b", "zi")) "coefficient" else "grouping factor"
    if (length(x) == 0L || is.null(nm) || any(is.na(nm) | nm == "") || anyDuplicated(nm)) {
      cli::cli_abort(
        c("{.arg {arg}} given as a list must name each element after a {key}, once.",
          "i" = "For example {.code {arg} = list({if (arg == 'b') 'Days' else 'Subject'} = {if (arg == 'cor') 'lkj(2)' else if (arg == 'b') 'normal(0, 10)' else 'half_normal(5)'})}."),
        class = "svir_error", call = NULL
      )
    }
    out <- Map(function(d, n) svir_validate_dist(d, arg, label = sprintf("%s$%s", arg, n)), x, nm)
    names(out) <- nm
    return(out)
  }
  cli::cli_abort(
    c("{.arg {arg}} must be a prior distribution or {.code NULL}.",
      "i" = paste0("Use ", svir_prior_hint[[arg]], ".")),
    class = "svir_error", call = NULL
  )
}

#' Priors for a svir model
#'
#' Sets the prior of each class of parameters. Every argument left `NULL`
#' gets its default, listed below. All priors are stated on the **original
#' scale of the data** (the units of the response and of each predictor);
#' svir standardises internally and transforms the priors exactly to match,
#' so a prior means the same thing whatever the internal scaling.
#' [prior_summary()] shows the priors a fit used, with numbers.
#'
#' @param intercept Prior of the intercept: [normal()], [student_t()] or
#'   [flat()]. As in brms, this is the intercept **when all predictors are
#'   at their means** (the intercept of the centred fixed-effect design),
#'   which is what the data inform most directly; the reported
#'   `(Intercept)` is the usual one of the uncentred predictors.
#' @param b Prior of the fixed-effect coefficients (other than the
#'   intercept): [normal()], [student_t()] or [flat()]; applied to every
#'   coefficient, or a named list (names = column names of the fixed-effect
#'   model matrix, e.g. `list(Days = normal(0, 10))`) to set some
#'   coefficients and leave the others at their default.
#' @param sd Prior of the random-effect standard deviations: [half_normal()],
#'   [half_student_t()] or [exponential()] (`normal(0, s)` and
#'   `student_t(df, 0, s)` are read as the half distributions); one for all,
#'   or a named list per grouping factor (e.g. `list(Subject = half_normal(20))`).
#' @param cor Prior of the correlation matrix of each correlated
#'   random-effect term: [lkj()]; one for all, or a named list per grouping
#'   factor.
#' @param sigma Prior of the residual standard deviation (gaussian family):
#'   [half_normal()], [half_student_t()] or [exponential()].
#' @param phi Prior of the dispersion \eqn{\phi} of the negative binomial
#'   family ([negbin()], variance \eqn{\mu + \mu^2/\phi}): [half_normal()],
#'   [half_student_t()] or [exponential()].
#' @param zi Prior of the zero-inflation coefficients (a `ziformula` in
#'   [svi_fit()]; on the logit scale of the probability of a structural
#'   zero): [normal()], [student_t()] or [flat()], one for all or a named
#'   list per coefficient (e.g. `list(minedno = normal(0, 5))`).
#'
#' @section Default priors:
#' Weakly informative and scale-aware, in the style of brms and rstanarm.
#' Write \eqn{s_y} for the standard deviation of the response (gaussian
#' family) and \eqn{s_y = 1} for the other families (the linear predictor is
#' on the link scale), \eqn{\bar y} for the mean of the response,
#' \eqn{s_x} for the standard deviation of a column of the fixed-effect
#' model matrix and \eqn{s_z} for the standard deviation of a column of a
#' random-effect model matrix (\eqn{s_z = 1} for a constant column such as
#' the random intercept).
#'
#' | class | gaussian | binomial, poisson, negbin |
#' |---|---|---|
#' | `intercept` (centred predictors) | `student_t(3,` \eqn{\bar y}`, ` \eqn{2.5 s_y}`)` | `student_t(3, 0, 2.5)` |
#' | `b` (each coefficient) | `normal(0, ` \eqn{2.5 s_y / s_x}`)` | `normal(0, ` \eqn{2.5 / s_x}`)` |
#' | `sd` (each random coefficient) | `half_student_t(3, ` \eqn{2.5 s_y / s_z}`)` | `half_student_t(3, ` \eqn{2.5 / s_z}`)` |
#' | `cor` | `lkj(1)` | `lkj(1)` |
#' | `sigma` | `half_student_t(3, ` \eqn{2.5 s_y}`)` | -- |
#' | `phi` | -- | `exponential(0.1)` (negbin only) |
#' | `zi` (zero inflation, logit scale) | -- | `student_t(3, 0, 2.5)` for its intercept (centred predictors), `normal(0, ` \eqn{2.5 / s_x}`)` for the others |
#'
#' The `b` default is rstanarm's autoscaling: on the standardised scale every
#' coefficient gets `normal(0, 2.5)`. The `sd` default scales in the same
#' way, so a random slope's prior does not depend on the units of its
#' predictor. The `phi` default has mean 10: it allows strong
#' overdispersion (\eqn{\phi} near 0) and data close to Poisson
#' (\eqn{\phi} of 30 or more has prior probability 5%); with a log
#' transform the implied prior on \eqn{\log\phi} vanishes at both ends.
#' A model without an intercept has no `intercept` prior, and a model whose
#' response is not centred (no intercept) uses \eqn{\bar y = 0}.
#'
#' @return An object of class `"svi_prior"`: a list with one element per
#'   class (`NULL` for the default).
#' @seealso [svir_dist] for the distributions, [prior_summary()].
#' @examples
#' svi_prior()
#' svi_prior(b = normal(0, 10), sd = half_normal(50), cor = lkj(2))
#' svi_prior(b = list(Days = student_t(3, 0, 20)), sigma = exponential(0.02))
#' @export
svi_prior <- function(intercept = NULL, b = NULL, sd = NULL, cor = NULL,
                      sigma = NULL, phi = NULL, zi = NULL) {
  out <- list(
    intercept = svir_validate_prior_arg(intercept, "intercept"),
    b = svir_validate_prior_arg(b, "b"),
    sd = svir_validate_prior_arg(sd, "sd"),
    cor = svir_validate_prior_arg(cor, "cor"),
    sigma = svir_validate_prior_arg(sigma, "sigma"),
    phi = svir_validate_prior_arg(phi, "phi"),
    zi = svir_validate_prior_arg(zi, "zi")
  )
  structure(out, class = "svi_prior")
}

#' @export
print.svi_prior <- function(x, ...) {
  cat("svir priors (NULL = default)\n")
  for (nm in names(x)) {
    v <- x[[nm]]
    txt <- if (is.null(v)) {
      "default"
    } else if (inherits(v, "svir_dist")) {
      format(v)
    } else {
      paste(sprintf("%s: %s", names(v), vapply(v, format, "")), collapse = "; ")
    }
    cat(sprintf("  %-9s %s\n", nm, txt))
  }
  invisible(x)
}

# Coerces the user's prior argument (NULL, svi_prior, or a plain list) to svi_prior.
svir_as_prior <- function(prior) {
  if (is.null(prior)) return(svi_prior())
  if (inherits(prior, "svi_prior")) return(prior)
  if (is.list(prior) && !inherits(prior, "svir_dist") && !is.null(names(prior)) &&
      all(names(prior) %in% names(svir_prior_allowed))) {
    return(do.call(svi_prior, prior))
  }
  cli::cli_abort(
    c("{.arg prior} must be made by {.fun svi_prior}.",
      "i" = "For example {.code prior = svi_prior(b = normal(0, 10))}."),
    class = "svir_error", call = NULL
  )
}

# ---- defaults ---------------------------------------------------------------

# Default prior of one layout row on the natural scale.
# row: a one-row data.frame of the layout; scaling: see svir_build_spec().
svir_default_dist <- function(row, scaling) {
  gauss <- identical(scaling$family, "gaussian")
  sy <- if (gauss) scaling$y_scale else 1
  switch(row$class,
    b = if (row$is_intercept) {
      student_t(3, if (gauss) scaling$y_center else 0, 2.5 * sy)
    } else {
      normal(0, 2.5 * sy / scaling$x_scale[[row$col]])
    },
    sd = half_student_t(3, 2.5 * sy / row$z_scale),
    cor = lkj(1),
    sigma = half_student_t(3, 2.5 * sy),
    phi = exponential(0.1),
    zi = if (row$is_intercept) {
      student_t(3, 0, 2.5)
    } else {
      normal(0, 2.5 / scaling$zi$x_scale[[row$col]])
    }
  )
}

# ---- prior table --------------------------------------------------------------

#' Prior table of a model
#'
#' Resolves the user's priors against the model's parameter layout: one row
#' per prior statement, as `prior_summary()` shows it.
#'
#' @param prior An `svi_prior` object, or `NULL` for all defaults.
#' @param layout The global parameter layout (`info$layout` of
#'   `svir_build_spec()`).
#' @param scaling The scaling list (`info$scaling`); its `family` element
#'   (family name) selects the defaults.
#' @param warn Warn about user priors that match no parameter.
#' @return A data.frame of class `"svir_prior_summary"` with columns
#'   `class`, `coef`, `group`, `prior` (natural-scale, formatted) and
#'   `source` (`"default"` or `"user"`), and attributes `dist` (list of
#'   `svir_dist`, one per row) and `layout_row` (integer, one per layout
#'   row: the table row that holds its prior).
#' @noRd
svir_prior_table <- function(prior, layout, scaling, warn = TRUE) {
  prior <- svir_as_prior(prior)
  D <- nrow(layout)
  rows <- list()
  key_of <- character(D)
  for (k in seq_len(D)) {
    r <- layout[k, , drop = FALSE]
    cls <- r$class
    if (cls == "b") {
      key <- if (r$is_intercept) "Intercept" else paste0("b|", r$coef)
      user <- if (r$is_intercept) prior$intercept else svir_pick(prior$b, r$coef)
      tcls <- if (r$is_intercept) "Intercept" else "b"
      tcoef <- if (r$is_intercept) "" else r$coef
      tgroup <- ""
    } else if (cls == "sd") {
      key <- paste0("sd|", r$term, "|", r$coef)
      user <- svir_pick(prior$sd, r$group)
      tcls <- "sd"; tcoef <- r$coef; tgroup <- r$group
    } else if (cls == "cor") {
      key <- paste0("cor|", r$term)
      user <- svir_pick(prior$cor, r$group)
      tcls <- "cor"; tcoef <- ""; tgroup <- r$group
    } else if (cls == "zi") {
      key <- paste0("zi|", r$coef)
      user <- svir_pick(prior$zi, r$coef)
      tcls <- "zi"; tcoef <- r$coef; tgroup <- ""
    } else {
      key <- cls
      user <- prior[[cls]]
      tcls <- cls; tcoef <- ""; tgroup <- ""
    }
    key_of[k] <- key
    if (is.null(rows[[key]])) {
      d <- if (is.null(user)) svir_default_dist(r, scaling) else user
      rows[[key]] <- list(class = tcls, coef = tcoef, group = tgroup, dist = d,
                          source = if (is.null(user)) "default" else "user")
    }
  }
  if (warn) svir_check_unused_priors(prior, layout)
  dists <- lapply(rows, `[[`, "dist")
  tab <- data.frame(
    class = vapply(rows, `[[`, "", "class"),
    coef = vapply(rows, `[[`, "", "coef"),
    group = vapply(rows, `[[`, "", "group"),
    prior = vapply(dists, format, ""),
    source = vapply(rows, `[[`, "", "source"),
    stringsAsFactors = FALSE
  )
  rownames(tab) <- NULL
  names(dists) <- NULL
  attr(tab, "dist") <- dists
  attr(tab, "layout_row") <- match(key_of, names(rows))
  class(tab) <- c("svir_prior_summary", "data.frame")
  tab
}

# A class-wide prior, or the element of a named list for `key`.
svir_pick <- function(x, key) {
  if (is.null(x) || inherits(x, "svir_dist")) return(x)
  x[[key]]
}

svir_check_unused_priors <- function(prior, layout) {
  cls <- layout$class
  named_miss <- function(x, have, what, arg) {
    if (is.null(x) || inherits(x, "svir_dist")) return(invisible())
    bad <- setdiff(names(x), have)
    if (length(bad)) {
      cli::cli_abort(
        c("{.arg prior}: {.arg {arg}} names {what} {.val {bad}}, not in the model.",
          "i" = if (length(have)) "The model has {.val {have}}." else "The model has none."),
        class = "svir_error", call = NULL
      )
    }
  }
  b_names <- layout$coef[cls == "b" & !layout$is_intercept]
  if (!is.null(prior$b) && !inherits(prior$b, "svir_dist") && "(Intercept)" %in% names(prior$b)) {
    cli::cli_abort(
      c("{.arg prior}: set the intercept's prior with {.arg intercept}, not {.code b$`(Intercept)`}.",
        "i" = "For example {.code svi_prior(intercept = student_t(3, 0, 10))}."),
      class = "svir_error", call = NULL
    )
  }
  named_miss(prior$b, b_names, "coefficient", "b")
  named_miss(prior$sd, unique(layout$group[cls == "sd"]), "grouping factor", "sd")
  named_miss(prior$cor, unique(layout$group[cls == "cor"]), "grouping factor of a correlated term", "cor")
  named_miss(prior$zi, layout$coef[cls == "zi"], "zero-inflation coefficient", "zi")
  unused <- character()
  if (!is.null(prior$intercept) && !any(layout$is_intercept)) unused <- c(unused, "intercept")
  if (inherits(prior$b, "svir_dist") && !length(b_names)) unused <- c(unused, "b")
  for (nm in c("sd", "cor", "sigma", "phi", "zi")) {
    if (!is.null(prior[[nm]]) && !any(cls == nm)) unused <- c(unused, nm)
  }
  if (length(unused)) {
    cli::cli_warn(
      c("The prior{?s} for {.arg {unused}} {?is/are} not used: the model has no such parameter.",
        "i" = "Intercept: the formula has one; sigma: gaussian family; phi: negbin family; cor: a correlated term with 2 or more coefficients; zi: a {.arg ziformula}."),
      class = "svir_warning"
    )
  }
  invisible()
}

# ---- internal-unit arrays ---------------------------------------------------

# a prior's engine code (svir_codes$prior); half-distributions are the
# full ones on a log-transformed positive parameter
svir_prior_type_code <- function(dist) svir_codes$prior[[sub("^half_", "", dist)]]

#' Prior arrays in the engine's internal units
#'
#' Transforms each global parameter's natural-scale prior to the internal
#' parameterisation of dev/ARCHITECTURE.md section 6. Where the internal
#' parameter is `theta_int = theta_raw * k`, a normal or Student-t prior
#' `(location, scale)` becomes `(location * k, scale * k)` and an exponential
#' `rate` becomes `rate / k`. The factors are: slope `j`: `k = x_scale[j] /
#' y_scale`; sd and sigma: `k = 1 / y_scale`; phi: `k = 1`. The intercept
#' (of the centred predictors) maps as `(intercept - y_center) / y_scale`.
#' (`y_center = 0`, `y_scale = 1` outside the gaussian family.)
#'
#' @param prior A prior table from `svir_prior_table()`, or an `svi_prior`
#'   object / `NULL` (the table is then built first).
#' @param layout,scaling As for `svir_prior_table()`.
#' @return `list(prior_type = int[D], prior_df = double[D], prior_loc =
#'   double[D], prior_scale = double[D])`. Unused entries are `df = 1`,
#'   `loc = 0`, `scale = 1`; LKJ puts `eta` in `prior_df`; exponential puts
#'   its rate in `prior_scale`; half distributions have `loc = 0`.
#' @noRd
svir_prior_arrays <- function(prior, layout, scaling) {
  if (!inherits(prior, "svir_prior_summary")) {
    prior <- svir_prior_table(prior, layout, scaling)
  }
  dists <- attr(prior, "dist")
  map <- attr(prior, "layout_row")
  D <- nrow(layout)
  type <- integer(D)
  df <- rep(1, D)
  loc <- numeric(D)
  scale <- rep(1, D)
  yc <- scaling$y_center
  ys <- scaling$y_scale
  for (k in seq_len(D)) {
    d <- dists[[map[k]]]
    r <- layout[k, , drop = FALSE]
    type[k] <- svir_prior_type_code(d$dist)
    if (d$dist == "lkj") {
      df[k] <- d$eta
      next
    }
    if (d$dist == "flat") next
    shift <- 0
    mult <- switch(r$class,
      b = if (r$is_intercept) {
        shift <- yc
        1 / ys
      } else {
        scaling$x_scale[[r$col]] / ys
      },
      sd = 1 / ys,
      sigma = 1 / ys,
      phi = 1,
      zi = if (r$is_intercept) 1 else scaling$zi$x_scale[[r$col]]
    )
    if (d$dist == "exponential") {
      scale[k] <- d$rate / mult
    } else {
      if (!is.na(d$df)) df[k] <- d$df
      loc[k] <- (d$location - shift) * mult
      scale[k] <- d$scale * mult
    }
  }
  list(prior_type = type, prior_df = df, prior_loc = loc, prior_scale = scale)
}

# ---- prior_summary ------------------------------------------------------------

#' Summary of the priors of a fitted model
#'
#' @param object A fitted model.
#' @param ... Unused.
#' @return For an `svi_fit`, a data.frame of class `"svir_prior_summary"`
#'   with one row per prior statement: `class` (`"Intercept"`, `"b"`,
#'   `"sd"`, `"cor"`, `"sigma"`, `"phi"`), `coef` (fixed-effect column or
#'   random coefficient), `group` (grouping factor), `prior` (the
#'   distribution with its numbers, on the original scale of the data) and
#'   `source` (`"default"` or `"user"`).
#' @seealso [svi_prior()]
#' @examples
#' \donttest{
#' fit <- svi_fit(Reaction ~ Days + (Days | Subject), data = lme4::sleepstudy,
#'                prior = svi_prior(b = normal(0, 20)))
#' prior_summary(fit)
#' }
#' @export
prior_summary <- function(object, ...) UseMethod("prior_summary")

#' @rdname prior_summary
#' @export
prior_summary.svi_fit <- function(object, ...) {
  object$prior
}

#' @export
print.svir_prior_summary <- function(x, ...) {
  df <- data.frame(
    class = x$class, coef = x$coef, group = x$group, prior = x$prior,
    source = x$source, stringsAsFactors = FALSE
  )
  print(df, right = FALSE, row.names = FALSE)
  invisible(x)
}
