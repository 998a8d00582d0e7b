# Data handling for the model spec: model frame, missing values, response,
# fixed-effect design, validation and the internal scaling
# (dev/ARCHITECTURE.md, section 6).

#' Abort with a svir input error
#'
#' @param msg Character vector for [cli::cli_abort()].
#' @param .envir Environment for cli's glue interpolation.
#' @noRd
svir_abort <- function(msg, .envir = parent.frame()) {
  cli::cli_abort(msg, class = "svir_error", call = NULL, .envir = .envir)
}

#' First three elements of a vector (for messages)
#'
#' @param x A vector.
#' @noRd
svir_head3 <- function(x) x[seq_len(min(length(x), 3L))]

#' Check the `data` argument
#'
#' @param data The user's `data`.
#' @return `data`, unchanged.
#' @noRd
svir_check_data <- function(data) {
  if (missing(data) || is.null(data)) {
    svir_abort(c("{.arg data} is missing.",
                 "i" = "Supply a data frame holding the variables of {.arg formula}."))
  }
  if (!is.data.frame(data)) {
    svir_abort(c("{.arg data} must be a data frame, not {.obj_type_friendly {data}}.",
                 "i" = "Convert it with {.code as.data.frame()}."))
  }
  if (nrow(data) == 0L) {
    svir_abort(c("{.arg data} has no rows.",
                 "i" = "Supply a data frame with at least one observation."))
  }
  data
}

#' Resolve `na.action` to a function
#'
#' @param na.action `NULL` (use `getOption("na.action")`), a function or the
#'   name of one.
#' @return A list with `fun` (a function) and `name` (its name or `NA`).
#' @noRd
svir_na_action <- function(na.action) {
  if (is.null(na.action)) na.action <- getOption("na.action", "na.omit")
  if (is.null(na.action)) na.action <- "na.omit"
  name <- NA_character_
  if (is.character(na.action) && length(na.action) == 1L) {
    name <- na.action
    na.action <- tryCatch(match.fun(na.action), error = function(e) NULL)
  }
  if (!is.function(na.action)) {
    svir_abort(c("{.arg na.action} must be a function such as {.fun na.omit} or its name.",
                 "i" = "Use {.code na.action = na.omit}, {.code na.exclude} or {.code na.fail}."))
  }
  if (is.na(name)) {
    for (nm in c("na.omit", "na.exclude", "na.fail", "na.pass")) {
      if (identical(na.action, get(nm, envir = asNamespace("stats")))) name <- nm
    }
  }
  list(fun = na.action, name = name)
}

#' Build the model frame
#'
#' All variables of the full formula, grouping factors included (via
#' `lme4::subbars()`), with `na.action` applied as `lm()` does. Unused
#' levels of factors other than the response are dropped after the
#' missing values are removed (as lme4 does).
#'
#' @param formula The model formula (with `||` already expanded).
#' @param data A data frame.
#' @param na.action As for [svir_na_action()].
#' @return The model frame, with attributes `terms` and (if rows were
#'   removed) `na.action`.
#' @noRd
svir_model_frame <- function(formula, data, na.action, weights = NULL) {
  na <- svir_na_action(na.action)
  fr_form <- lme4::subbars(formula)
  environment(fr_form) <- environment(formula)
  # the weights' values go into the call, so that the frame keeps them
  # as "(weights)" and drops their rows with the others'
  mf <- tryCatch(
    do.call(stats::model.frame,
            list(fr_form, data = data, weights = weights, na.action = stats::na.pass,
                 drop.unused.levels = FALSE)),
    error = function(e) svir_model_frame_error(e, formula)
  )
  if (nrow(mf) == 0L) {
    svir_abort(c("{.arg data} has no rows for the model.",
                 "i" = "Supply data with at least one observation."))
  }
  cc <- stats::complete.cases(mf)
  if (!all(cc)) {
    has_na <- vapply(mf, function(v) anyNA(v), NA)
    na_vars <- names(mf)[has_na]
    if (identical(na$name, "na.fail") || identical(na$name, "na.pass")) {
      svir_abort(c(
        "Missing values in {.var {na_vars}} ({sum(!cc)} row{?s}) and {.arg na.action} is {.fn {na$name}}.",
        "i" = "Remove the incomplete rows, or use {.code na.action = na.omit} to drop them."
      ))
    }
    mf2 <- tryCatch(na$fun(mf), error = function(e) {
      svir_abort(c("{.arg na.action} failed on the model frame: {conditionMessage(e)}",
                   "i" = "Missing values in {.var {na_vars}}. Use {.code na.action = na.omit} to drop them."))
    })
    if (!is.data.frame(mf2) || !all(stats::complete.cases(mf2))) {
      svir_abort(c("Missing values in {.var {na_vars}} remain after {.arg na.action}.",
                   "i" = "svir cannot fit rows with missing values: use {.code na.action = na.omit}."))
    }
    mf <- mf2
  }
  if (nrow(mf) == 0L) {
    svir_abort(c("No observations are left after removing the rows with missing values.",
                 "i" = "Every row of {.arg data} has a missing value in a variable of {.arg formula}."))
  }
  # drop unused levels of factors (not of the response: its first level is
  # the binomial failure, whatever is present)
  resp <- attr(attr(mf, "terms"), "response")
  for (j in seq_along(mf)) {
    if (j != resp && is.factor(mf[[j]])) mf[[j]] <- droplevels(mf[[j]])
  }
  mf
}

#' Rethrow a model.frame() error as a svir error
#'
#' @param e The condition.
#' @param formula The formula.
#' @noRd
svir_model_frame_error <- function(e, formula) {
  msg <- conditionMessage(e)
  m <- regmatches(msg, regexec("object '([^']+)' not found", msg))[[1]]
  if (length(m) == 2L) {
    var <- m[2]
    svir_abort(c("Variable {.var {var}} in {.arg formula} is not in {.arg data}.",
                 "i" = "Check the spelling, or add a column {.var {var}} to {.arg data}."))
  }
  svir_abort(c("Can't build the model frame from {.arg formula} and {.arg data}.",
               "x" = "{msg}"))
}

#' Extract and check the response
#'
#' @param mf Model frame.
#' @param family_name `"gaussian"`, `"binomial"`, `"poisson"` or `"negbin"`.
#' @return `list(y, trials)`: `y` the response as double (binomial:
#'   successes), `trials` double (binomial) or `NULL`.
#' @noRd
svir_response <- function(mf, family_name, proportions = FALSE) {
  y <- stats::model.response(mf)
  rname <- names(mf)[attr(attr(mf, "terms"), "response")]
  if (family_name == "binomial") {
    if (is.matrix(y)) {
      if (ncol(y) != 2L || !is.numeric(y)) {
        svir_abort(c("The binomial response {.var {rname}} must have two columns, {.code cbind(successes, failures)}.",
                     "i" = "Or use a 0/1 vector, a logical or a two-level factor."))
      }
      svir_check_counts(y, rname, "binomial")
      s <- as.double(y[, 1])
      f <- as.double(y[, 2])
      return(list(y = s, trials = s + f, cbind = TRUE))
    }
    if (is.factor(y)) {
      if (nlevels(y) != 2L) {
        svir_abort(c("The binomial response {.var {rname}} is a factor with {nlevels(y)} level{?s}; it needs 2.",
                     "i" = "The first level is the failure (0), the second the success (1), as in {.fun glm}."))
      }
      y <- as.double(y != levels(y)[1L])
    } else if (is.logical(y)) {
      y <- as.double(y)
    } else if (is.numeric(y) && is.null(dim(y))) {
      svir_check_finite(y, rname, "response")
      if (proportions && any(y < 0 | y > 1)) {
        svir_abort(c("The binomial response {.var {rname}} with {.arg weights} is a proportion of successes; it has values outside 0..1 such as {.val {svir_head3(unique(y[y < 0 | y > 1]))}}.",
                     "i" = "For counts of successes out of trials use {.code cbind(successes, failures) ~ ...}."))
      }
      if (!proportions && any(y != 0 & y != 1)) {
        svir_abort(c("The binomial response {.var {rname}} must be 0 or 1; it has values such as {.val {svir_head3(unique(y[y != 0 & y != 1]))}}.",
                     "i" = "For counts of successes out of trials use {.code cbind(successes, failures) ~ ...}."))
      }
      y <- as.double(y)
    } else {
      svir_abort(c("The binomial response {.var {rname}} must be 0/1, logical, a two-level factor or {.code cbind(successes, failures)}.",
                   "x" = "It is {.obj_type_friendly {y}}."))
    }
    return(list(y = y, trials = rep(1, length(y))))
  }
  if (!is.numeric(y) || !is.null(dim(y))) {
    what <- if (family_name == "gaussian") "a numeric vector" else "a vector of counts"
    svir_abort(c("The response {.var {rname}} must be {what} for the {family_name} family.",
                 "x" = "It is {.obj_type_friendly {y}}."))
  }
  if (family_name %in% c("poisson", "negbin")) {
    svir_check_counts(y, rname, family_name)
  } else {
    svir_check_finite(y, rname, "response")
  }
  list(y = as.double(y), trials = NULL)
}

# `weights` as given to svi_fit(): NULL or numeric, one per row of data
svir_check_weights_arg <- function(weights, nrow_data) {
  if (is.null(weights)) return(invisible())
  if (!is.numeric(weights) || !is.null(dim(weights))) {
    svir_abort(c("{.arg weights} must be a numeric vector, one value per row of {.arg data}.",
                 "x" = "It is {.obj_type_friendly {weights}}."))
  }
  if (length(weights) != nrow_data) {
    svir_abort(c("{.arg weights} has {length(weights)} value{?s}; {.arg data} has {nrow_data} row{?s}.",
                 "i" = "Give one weight per row of {.arg data}, or name a column of it."))
  }
  invisible()
}

# the prior weights of the rows kept: finite, non-negative, not all zero
svir_check_weights <- function(w) {
  if (any(!is.finite(w)) || any(w < 0)) {
    bad <- w[!is.finite(w) | w < 0]
    svir_abort(c("{.arg weights} must be finite and non-negative; it has {.val {svir_head3(unique(bad))}}.",
                 "i" = "A weight of 0 leaves an observation out; negative weights have no meaning."))
  }
  if (all(w == 0)) svir_abort("Every weight is 0: there is nothing to fit.")
  invisible(w)
}

#' Check for non-finite values
#'
#' @param x Numeric vector or matrix.
#' @param name Name of the variable or column for the message.
#' @param what What it is (`"response"`, `"predictor"`, ...).
#' @noRd
svir_check_finite <- function(x, name, what) {
  bad <- !is.finite(x)
  if (any(bad)) {
    svir_abort(c("The {what} {.var {name}} has non-finite values ({.val {svir_head3(unique(x[bad]))}}) in {sum(bad)} row{?s}.",
                 "i" = "Remove or fix these rows in {.arg data}; {.val Inf} and {.val NaN} cannot be fitted."))
  }
  invisible(x)
}

#' Check that a response holds non-negative whole numbers
#'
#' @param y Numeric vector or matrix.
#' @param name Response name.
#' @param family_name Family name, for the message.
#' @noRd
svir_check_counts <- function(y, name, family_name) {
  svir_check_finite(y, name, "response")
  if (any(y < 0)) {
    svir_abort(c("The response {.var {name}} has negative values; the {family_name} family needs counts (0, 1, 2, ...).",
                 "i" = "Check {.var {name}} in {.arg data}."))
  }
  if (any(y > 2^53)) {
    svir_abort(c("The response {.var {name}} has counts up to {format(max(y), digits = 3)}; counts above 2^53 (about 9e15) are not whole numbers in double precision.",
                 "i" = "Divide the counts by a known factor and add {.code offset(log(factor))} to the formula, or model {.code log(y)} with {.code family = gaussian()}."))
  }
  if (any(abs(y - round(y)) > 1e-8)) {
    svir_abort(c("The response {.var {name}} has non-integer values; the {family_name} family needs whole-number counts.",
                 "i" = "Round or fix {.var {name}}, or use {.code family = gaussian()} for continuous data."))
  }
  invisible(y)
}

#' Terms with the predictor transformations kept
#'
#' The terms of one side of a formula (the fixed part, or the left side of a
#' random-effect term), without the response, with `predvars` taken from the
#' model frame so that `poly()`, `ns()` and `scale()` evaluate on new data as
#' on the fitting data.
#'
#' @param form A one- or two-sided formula.
#' @param mf The model frame of the fit.
#' @return A terms object.
#' @noRd
svir_terms_with_predvars <- function(form, mf) {
  tt <- stats::delete.response(stats::terms(form, data = mf))
  pv <- attr(attr(mf, "terms"), "predvars")
  if (!is.null(pv)) {
    vf <- vapply(as.list(attr(attr(mf, "terms"), "variables"))[-1L], deparse1, "")
    vt <- vapply(as.list(attr(tt, "variables"))[-1L], deparse1, "")
    i <- match(vt, vf)
    if (length(vt) && !anyNA(i)) {
      attr(tt, "predvars") <- as.call(c(quote(list), as.list(pv)[-1L][i]))
    }
  }
  tt
}

#' Fixed-effect model matrix
#'
#' @param tf Fixed terms from [svir_terms_with_predvars()].
#' @param mf Model frame.
#' @param contrasts `contrasts.arg` for [stats::model.matrix()].
#' @return The raw model matrix (with `assign` and `contrasts` attributes).
#' @noRd
svir_fixed_matrix <- function(tf, mf, contrasts = NULL) {
  X <- tryCatch(
    stats::model.matrix(tf, mf, contrasts.arg = contrasts),
    error = function(e) {
      svir_abort(c("Can't build the fixed-effect design from {.arg formula}.",
                   "x" = "{conditionMessage(e)}"))
    }
  )
  if (nrow(X) != nrow(mf)) {
    svir_abort("The fixed-effect design of {.arg formula} has {nrow(X)} rows for {nrow(mf)} observations.")
  }
  for (j in seq_len(ncol(X))) svir_check_finite(X[, j], colnames(X)[j], "predictor column")
  # without model.matrix()'s n row names (the fit keeps X; predict() and
  # residuals() take the names from the frame)
  rownames(X) <- NULL
  X
}

#' Offset of the model
#'
#' @param mf Model frame.
#' @return Double vector or `NULL`.
#' @noRd
svir_offset <- function(mf) {
  off <- stats::model.offset(mf)
  if (is.null(off)) return(NULL)
  off <- as.double(off)
  tt <- attr(mf, "terms")
  vars <- vapply(as.list(attr(tt, "variables"))[-1L], deparse1, "")
  nm <- paste(vars[attr(tt, "offset")], collapse = " + ")
  svir_check_finite(off, if (nzchar(nm)) nm else "offset", "offset")
  off
}

#' Internal scaling of the fixed-effect design and the response
#'
#' Columns other than the intercept are centred (when the model has an
#' intercept) and divided by their root mean square about the centre: the
#' standard deviation when centred. For the gaussian family the response is
#' centred at its mean (models with an intercept) and scaled the same way;
#' other families keep the response as it is.
#'
#' @param X Raw fixed-effect model matrix.
#' @param y Response (double).
#' @param family_name Family name.
#' @param has_intercept Whether the model has an intercept column.
#' @return `list(y_center, y_scale, x_center[p], x_scale[p], has_intercept,
#'   family)`; the intercept column has centre 0 and scale 1.
#' @noRd
svir_scaling <- function(X, y, family_name, has_intercept) {
  n <- nrow(X)
  p <- ncol(X)
  dn <- max(n - 1, 1)
  x_center <- numeric(p)
  x_scale <- rep(1, p)
  cn <- colnames(X)
  for (j in seq_len(p)) {
    if (has_intercept && cn[j] == "(Intercept)") next
    x <- X[, j]
    if (has_intercept) {
      if (max(x) - min(x) <= 1e-12 * max(1, abs(x))) {
        svir_abort(c("Fixed-effect column {.var {cn[j]}} is constant, so it cannot be estimated with the intercept.",
                     "i" = "Remove it from {.arg formula}, or drop the intercept with {.code 0 +}."))
      }
      x_center[j] <- mean(x)
    }
    s <- svir_rms(x - x_center[j], dn)
    if (!(s > 0)) {
      svir_abort(c("Fixed-effect column {.var {cn[j]}} is zero in every row.",
                   "i" = "Remove it from {.arg formula}."))
    }
    x_scale[j] <- s
  }
  names(x_center) <- names(x_scale) <- cn
  y_center <- 0
  y_scale <- 1
  if (family_name == "gaussian") {
    if (n < 2L) {
      svir_abort(c("The gaussian family needs at least 2 observations; {.arg data} has {n}.",
                   "i" = "Supply more data."))
    }
    if (has_intercept) y_center <- mean(y)
    y_scale <- svir_rms(y - y_center, dn)
    if (!(y_scale > 0) || y_scale <= 1e-12 * max(1, abs(y_center))) {
      svir_abort(c("The response has no variation (every value is {.val {y[1]}}).",
                   "i" = "A gaussian model needs a response that varies."))
    }
  }
  list(y_center = y_center, y_scale = y_scale, x_center = x_center,
       x_scale = x_scale, has_intercept = has_intercept, family = family_name)
}

# sqrt(sum(r^2) / dn) without overflow or underflow for any finite r
svir_rms <- function(r, dn) {
  m <- max(abs(r))
  if (!(m > 0) || !is.finite(m)) return(if (is.finite(m)) 0 else m)
  m * sqrt(sum((r / m)^2) / dn)
}

#' Apply the internal scaling to X
#'
#' @param X Raw model matrix.
#' @param scaling From [svir_scaling()].
#' @return Plain double matrix (dim and column names only).
#' @noRd
svir_scale_X <- function(X, scaling) {
  # unname() first: arithmetic on and as.double() of a matrix with
  # model.matrix()'s n row names cost several times the copy itself
  n <- nrow(X)
  Xs <- (as.double(unname(unclass(X))) - rep(as.double(scaling$x_center), each = n)) /
    rep(as.double(scaling$x_scale), each = n)
  matrix(Xs, n, ncol(X), dimnames = list(NULL, colnames(X)))
}

#' Refuse a rank-deficient fixed-effect design
#'
#' @param Xs Scaled model matrix.
#' @param what,part,arg The design's name in messages, and the argument
#'   (and which part of it) that made it: the GLMM's fixed effects by
#'   default, `ziformula`'s for the zero inflation.
#' @return The QR decomposition of `Xs`, invisibly.
#' @noRd
svir_check_rank <- function(Xs, what = "fixed-effect design", part = "the fixed part of ",
                            arg = "formula") {
  p <- ncol(Xs)
  if (p == 0L) return(invisible(qr(Xs)))
  if (nrow(Xs) < p) {
    svir_abort(c("The {what} has {p} columns but only {nrow(Xs)} observation{?s}.",
                 "i" = "Simplify {part}{.arg {arg}}."))
  }
  qx <- qr(Xs, tol = 1e-7)
  if (qx$rank < p) {
    aliased <- colnames(Xs)[qx$pivot[(qx$rank + 1L):p]]
    k <- length(aliased)
    svir_abort(c("The {what} is rank deficient: {.var {aliased}} {?is/are} a linear combination of the other columns.",
                 "i" = "Remove {cli::qty(k)}{?it/them} from {.arg {arg}} ({.fun lm} would report {cli::qty(k)}{?its coefficient/their coefficients} as {.val NA})."))
  }
  invisible(qx)
}
