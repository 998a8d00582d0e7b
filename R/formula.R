# Formula handling and the engine spec (dev/ARCHITECTURE.md, section 6).

#' Check the `formula` argument
#'
#' @param formula The user's formula.
#' @return The formula.
#' @noRd
svir_check_formula <- function(formula) {
  if (missing(formula) || !inherits(formula, "formula")) {
    svir_abort(c("{.arg formula} must be a formula such as {.code y ~ x + (1 | g)}.",
                 "x" = "It is {.obj_type_friendly {if (missing(formula)) NULL else formula}}."))
  }
  if (length(formula) != 3L) {
    svir_abort(c("{.arg formula} has no response (left-hand side).",
                 "i" = "Write it as {.code response ~ predictors}."))
  }
  formula
}

#' Grouping factor of a random-effect term
#'
#' As lme4 builds it (`mkReTrms()`), without its sparse design matrices:
#' the variables of the grouping expression become factors, `a:b` is the
#' interaction with lme4's level order, and unused levels are dropped.
#'
#' @param expr The grouping expression (right of the bar).
#' @param mf Model frame.
#' @param env_parent Where functions in the expression are looked up.
#' @return A factor.
#' @noRd
svir_group_factor <- function(expr, mf, env_parent = baseenv()) {
  env <- list()
  for (v in all.vars(expr)) {
    x <- mf[[v]]
    if (!is.null(x)) env[[v]] <- if (is.factor(x)) x else factor(x)
  }
  # lme4's `%i%`: levels ordered by (level of a, level of b)
  interact <- function(f1, f2) {
    if (!is.factor(f1) || !is.factor(f2)) stop("both inputs must be factors", call. = FALSE)
    f12 <- paste(f1, f2, sep = ":")
    u <- which(!duplicated(f12))
    rank <- length(levels(f2)) * as.numeric(f1[u]) + as.numeric(f2[u])
    factor(f12, levels = (f12[u])[order(rank)])
  }
  swap <- function(e) {
    if (!is.call(e)) return(e)
    args <- lapply(as.list(e)[-1L], swap)
    if (identical(e[[1L]], quote(`:`))) return(as.call(c(list(interact), args)))
    as.call(c(list(e[[1L]]), args))
  }
  ff <- eval(swap(expr), env, env_parent)
  if (!is.factor(ff)) ff <- factor(ff)
  if (all(is.na(ff))) stop("invalid grouping factor ", deparse1(expr), call. = FALSE)
  # factor(ff, exclude = NA), without its character round trip
  lv <- levels(ff)
  codes <- unclass(ff)
  keep <- tabulate(codes, length(lv)) > 0L & !is.na(lv)
  if (all(keep) && is.null(attr(ff, "contrasts"))) return(ff)
  newcode <- cumsum(keep)
  newcode[!keep] <- NA_integer_
  structure(as.integer(newcode[codes]), levels = lv[keep], class = "factor")
}

#' Random-effect terms
#'
#' Follows lme4: `findbars()` (which expands `(x | a/b)` into
#' `(x | b:a) + (x | a)`), grouping factors as `mkReTrms()` builds them
#' ([svir_group_factor()]), the order of the terms (sorted by decreasing
#' number of levels, as lme4 does; svir keeps this order everywhere), and
#' for each term `model.matrix(~ lhs, mf)` for its raw Z, as lme4 builds it.
#' lme4's sparse design matrices are not built: the engine needs only the
#' group of each observation and the dense Z columns.
#'
#' @param formula Formula with `||` expanded.
#' @param mf Model frame.
#' @return List per term: `grpvar`, `cnms`, `levels`, `group` (1-based
#'   integer), `ngroups`, `Z` (raw n x q), `correlated`, `term` (the bar as
#'   text, e.g. `"Days | Subject"`), `lhs` (the left-hand side expression),
#'   `z_scale` (sd of each Z column, or its absolute value when constant).
#' @noRd
svir_re_terms <- function(formula, mf) {
  bars <- lme4::findbars(formula)
  if (!length(bars)) return(list())
  tn <- vapply(bars, deparse1, "")
  if (anyDuplicated(tn)) {
    svir_abort(c("{.arg formula} repeats the random-effect term {.code ({tn[duplicated(tn)][1]})}.",
                 "i" = "Give each random-effect term once."))
  }
  facs <- lapply(bars, function(bar) {
    tryCatch(
      svir_group_factor(bar[[3L]], mf, environment(formula) %||% baseenv()),
      error = function(e) {
        svir_abort(c("Can't build the random-effect terms of {.arg formula}.",
                     "x" = "{conditionMessage(e)}",
                     "i" = "Grouping factors must be variables of {.arg data}."))
      }
    )
  })
  nl <- vapply(facs, nlevels, 0L)
  ord <- if (any(diff(nl) > 0)) rev(order(nl)) else seq_along(nl)
  gnames <- vapply(bars, function(b) paste(deparse(b[[3L]], 500L), collapse = " "), "")
  out <- vector("list", length(ord))
  for (i in seq_along(ord)) {
    bar <- bars[[ord[i]]]
    ff <- facs[[ord[i]]]
    grpvar <- gnames[ord[i]]
    if (nlevels(ff) < 2L) {
      svir_abort(c("Grouping factor {.var {grpvar}} of the term {.code ({tn[ord[i]]})} has only one level ({.val {levels(ff)}}).",
                   "i" = "A random effect needs at least two groups: remove the term from {.arg formula} or check {.var {grpvar}} in {.arg data}."))
    }
    # a random intercept's column of ones without model.matrix() (its n row
    # names cost more than the column)
    Z <- if (identical(bar[[2]], 1) || identical(bar[[2]], 1L)) {
      matrix(1, nrow(mf), 1L, dimnames = list(NULL, "(Intercept)"))
    } else tryCatch(
      stats::model.matrix(eval(substitute(~foo, list(foo = bar[[2]]))), mf),
      error = function(e) {
        svir_abort(c("Can't build the random-effect design of {.code ({tn[ord[i]]})}.",
                     "x" = "{conditionMessage(e)}"))
      }
    )
    if (ncol(Z) == 0L) {
      svir_abort(c("The random-effect term {.code ({tn[ord[i]]})} has no coefficients.",
                   "i" = "Write {.code (1 | {grpvar})} for a random intercept."))
    }
    cn <- colnames(Z)
    # without model.matrix()'s n row names, which every copy would carry
    Zr <- matrix(as.double(unname(Z)), nrow(Z), ncol(Z), dimnames = list(NULL, cn))
    for (j in seq_len(ncol(Zr))) {
      svir_check_finite(Zr[, j], cn[j], sprintf("random-effect column (term %s)", tn[ord[i]]))
    }
    zs <- apply(Zr, 2L, function(z) {
      s <- if (length(z) > 1L) stats::sd(z) else 0
      if (s > 1e-12 * max(1, abs(z))) s else max(abs(z[1]), 1e-12)
    })
    out[[i]] <- list(
      grpvar = grpvar,
      cnms = cn,
      levels = levels(ff),
      group = as.integer(ff),
      ngroups = nlevels(ff),
      Z = Zr,
      correlated = ncol(Zr) > 1L,
      term = tn[ord[i]],
      lhs = bar[[2]],
      z_scale = unname(zs)
    )
  }
  out
}

#' Global parameter layout
#'
#' One row per entry of the engine's global parameter vector, in the order of
#' dev/ARCHITECTURE.md: `beta`, all `log_sd` blocks (term order), all
#' `cpc` blocks of correlated terms, `log_sigma` (gaussian), `log_phi`
#' (negbin), the zero inflation's `gamma` (with a `ziformula`).
#'
#' @param coef_names Column names of X.
#' @param re Random-effect terms from [svir_re_terms()].
#' @param family_name Family name.
#' @param zi_names Column names of the zero inflation's model matrix, or NULL.
#' @return A data.frame with columns `index` (1-based), `name` (internal
#'   name: `beta[j]`, `log_sd[t][k]`, `cpc[t][m]`, `log_sigma`, `log_phi`,
#'   `gamma[j]`), `class` (`"b"`, `"sd"`, `"cor"`, `"sigma"`, `"phi"`,
#'   `"zi"`), `is_intercept`, `col` (column of X for `b`, of Xz for `zi`), `term` (term index for `sd`/`cor`),
#'   `group` (grouping factor name), `coef` (X column, Z column, or
#'   `"<cnm_j>__<cnm_i>"` for `cor`), `cor_i`, `cor_j` (1-based row and column
#'   of the correlation, `i > j`), `z_scale` (sd of the Z column, for `sd`),
#'   `draws_name` (the natural-scale column name of section 6).
#' @noRd
svir_layout <- function(coef_names, re, family_name, zi_names = NULL) {
  rows <- list()
  add <- function(...) rows[[length(rows) + 1L]] <<- list(...)
  for (j in seq_along(coef_names)) {
    add(name = sprintf("beta[%d]", j), class = "b",
        is_intercept = coef_names[j] == "(Intercept)", col = j, term = NA_integer_,
        group = "", coef = coef_names[j], cor_i = NA_integer_, cor_j = NA_integer_,
        z_scale = NA_real_, draws_name = coef_names[j])
  }
  for (t in seq_along(re)) {
    tm <- re[[t]]
    for (k in seq_along(tm$cnms)) {
      add(name = sprintf("log_sd[%d][%d]", t, k), class = "sd", is_intercept = FALSE,
          col = NA_integer_, term = t, group = tm$grpvar, coef = tm$cnms[k],
          cor_i = NA_integer_, cor_j = NA_integer_, z_scale = tm$z_scale[k],
          draws_name = sprintf("sd_%s__%s", tm$grpvar, tm$cnms[k]))
    }
  }
  for (t in seq_along(re)) {
    tm <- re[[t]]
    q <- length(tm$cnms)
    if (!tm$correlated || q < 2L) next
    m <- 0L
    for (i in 2:q) {
      for (j in seq_len(i - 1L)) {
        m <- m + 1L
        add(name = sprintf("cpc[%d][%d]", t, m), class = "cor", is_intercept = FALSE,
            col = NA_integer_, term = t, group = tm$grpvar,
            coef = paste(tm$cnms[j], tm$cnms[i], sep = "__"),
            cor_i = i, cor_j = j, z_scale = NA_real_,
            draws_name = sprintf("cor_%s__%s__%s", tm$grpvar, tm$cnms[j], tm$cnms[i]))
      }
    }
  }
  if (family_name == "gaussian") {
    add(name = "log_sigma", class = "sigma", is_intercept = FALSE, col = NA_integer_,
        term = NA_integer_, group = "", coef = "", cor_i = NA_integer_,
        cor_j = NA_integer_, z_scale = NA_real_, draws_name = "sigma")
  }
  if (family_name == "negbin") {
    add(name = "log_phi", class = "phi", is_intercept = FALSE, col = NA_integer_,
        term = NA_integer_, group = "", coef = "", cor_i = NA_integer_,
        cor_j = NA_integer_, z_scale = NA_real_, draws_name = "phi")
  }
  for (j in seq_along(zi_names)) {
    add(name = sprintf("gamma[%d]", j), class = "zi",
        is_intercept = zi_names[j] == "(Intercept)", col = j, term = NA_integer_,
        group = "", coef = zi_names[j], cor_i = NA_integer_, cor_j = NA_integer_,
        z_scale = NA_real_, draws_name = paste0("zi_", zi_names[j]))
  }
  if (!length(rows)) {
    layout <- data.frame(index = integer(), name = character(), class = character(),
                         is_intercept = logical(), col = integer(), term = integer(),
                         group = character(), coef = character(), cor_i = integer(),
                         cor_j = integer(), z_scale = double(), draws_name = character(),
                         stringsAsFactors = FALSE)
    return(layout)
  }
  layout <- do.call(rbind, lapply(rows, as.data.frame, stringsAsFactors = FALSE))
  layout <- cbind(index = seq_len(nrow(layout)), layout)
  rownames(layout) <- NULL
  dup <- layout$draws_name[duplicated(layout$draws_name)]
  if (length(dup)) {
    svir_abort(c("{.arg formula} gives two parameters the same name {.val {dup[1]}}.",
                 "i" = "A random-effect coefficient may appear once per grouping factor, and a fixed-effect column may not be named {.val sigma} or {.val phi}: rename or remove the duplicate."))
  }
  layout
}

# The first column of X that is all ones (an intercept), NA if none.
svir_ones_column <- function(X) {
  which(vapply(seq_len(ncol(X)), function(j) all(X[, j] == 1), TRUE))[1]
}

# For each column of a random-effect design Z that is a linear combination of
# the (internal) fixed-effect columns, Z[, k] = X a_k, the coefficients a_k
# (a p x q matrix, NaN columns where Z[, k] is not in the span). Along these
# directions a shift of every group's effect can be moved into the fixed
# effects without changing the linear predictor; the engine's guide
# couples the fixed effects with the random effects (coupling_forward() in
# src/models/glmm/glmm_coupling.c).
svir_xmap <- function(qr_x, X, Z) {
  out <- matrix(NaN, ncol(X), ncol(Z))
  if (ncol(X) == 0L) return(out)
  # a column of ones is X's intercept column when X has one (no QR solve
  # over all rows: 0.01 s per term on InstEval)
  ones <- svir_ones_column(X)
  for (k in seq_len(ncol(Z))) {
    if (!is.na(ones) && all(Z[, k] == 1)) {
      out[, k] <- as.double(seq_len(ncol(X)) == ones)
      next
    }
    a <- qr.coef(qr_x, Z[, k])
    if (anyNA(a)) next
    res <- Z[, k] - drop(X %*% a)
    if (max(abs(res)) <= 1e-8 * (1 + max(abs(Z[, k])))) out[, k] <- a
  }
  out
}

#' Build the engine spec and the information the result object needs
#'
#' The front door from formula + data to the numeric arrays of
#' dev/ARCHITECTURE.md section 6, in internal units, and to everything the
#' `svi_fit` object of section 6 records.
#'
#' @param formula Model formula, lme4 syntax: `y ~ x + (x | g)`, `(x || g)`,
#'   `(1 | a/b)`, `offset()`, `poly()`, factors, interactions. Binomial
#'   responses may be `cbind(successes, failures)`.
#' @param data A data frame.
#' @param family A family object, family function or string (see
#'   [svir_family_code()]).
#' @param prior An `svi_prior` object or `NULL` (defaults).
#' @param na.action `NULL` (`getOption("na.action")`), a function or its
#'   name.
#' @param contrasts `contrasts.arg` for the fixed-effect model matrix.
#' @param ... Ignored.
#' @return `list(spec, info)`; see dev/ARCHITECTURE.md and the report in
#'   the package's development notes. `spec` holds `y, trials, offset, X,
#'   family, link, terms, prior_type, prior_df, prior_loc, prior_scale`.
#' @noRd
svir_build_spec <- function(formula, data, family = stats::gaussian(), prior = NULL,
                            na.action = NULL, contrasts = NULL, ziformula = NULL,
                            weights = NULL, ...) {
  formula <- svir_check_formula(formula)
  fam <- svir_family_code(family)
  prior <- svir_as_prior(prior)
  data <- svir_check_data(data)
  zif <- svir_zi_formula(ziformula, fam$name)

  formula_x <- lme4::expandDoubleVerts(formula)
  environment(formula_x) <- environment(formula)
  svir_check_weights_arg(weights, nrow(data))
  mf <- svir_model_frame(svir_zi_frame_formula(formula_x, zif), data, na.action, weights)
  n <- nrow(mf)

  wts <- stats::model.weights(mf)
  resp <- svir_response(mf, fam$name, proportions = !is.null(wts))
  if (!is.null(wts)) {
    svir_check_weights(wts)
    if (fam$name == "binomial" && !isTRUE(resp$cbind)) {
      # glm()'s meaning: the weights are the trials of a proportion
      resp$trials <- as.double(wts)
      resp$y <- resp$y * resp$trials
      wts <- NULL
    }
  }
  fixed_form <- lme4::nobars(formula_x)
  if (!inherits(fixed_form, "formula")) {
    # nobars() returns the bare response when the formula has only bars
    fixed_form <- stats::reformulate("1", response = formula_x[[2]])
  }
  environment(fixed_form) <- environment(formula)
  tf <- svir_terms_with_predvars(fixed_form, mf)
  X <- svir_fixed_matrix(tf, mf, contrasts)
  coef_names <- colnames(X)
  has_intercept <- attr(tf, "intercept") == 1L && "(Intercept)" %in% coef_names
  offset <- svir_offset(mf)
  re <- svir_re_terms(formula_x, mf)

  scaling <- svir_scaling(X, resp$y, fam$name, has_intercept)
  Xs <- svir_scale_X(X, scaling)
  qr_x <- svir_check_rank(Xs)
  zi <- if (is.null(zif)) NULL else svir_zi_design(zif, mf, contrasts)
  scaling$zi <- zi$scaling

  layout <- svir_layout(coef_names, re, fam$name, zi$names)
  ptab <- svir_prior_table(prior, layout, scaling)
  parr <- svir_prior_arrays(ptab, layout, scaling)

  y_int <- (resp$y - scaling$y_center) / scaling$y_scale
  off_int <- if (is.null(offset)) NULL else offset / scaling$y_scale
  spec_terms <- lapply(re, function(tm) {
    list(group = tm$group - 1L, ngroups = as.integer(tm$ngroups), Z = tm$Z,
         correlated = isTRUE(tm$correlated), xmap = svir_xmap(qr_x, Xs, tm$Z))
  })
  spec <- list(
    y = as.double(y_int),
    trials = resp$trials,
    offset = off_int,
    X = Xs,
    family = as.integer(fam$family),
    link = as.integer(fam$link),
    terms = spec_terms,
    prior_type = parr$prior_type,
    prior_df = parr$prior_df,
    prior_loc = parr$prior_loc,
    prior_scale = parr$prior_scale
  )
  if (!is.null(zi)) spec$Xz <- zi$Xs
  if (!is.null(wts)) spec$weights <- as.double(wts)
  info <- list(
    formula = formula,
    formula_expanded = formula_x,
    fixed_formula = fixed_form,
    terms_fixed = tf,
    terms_full = attr(mf, "terms"),
    xlevels = stats::.getXlevels(tf, mf),
    contrasts = attr(X, "contrasts"),
    frame = mf,
    na.action = attr(mf, "na.action"),
    X = X,
    y = resp$y,
    trials = resp$trials,
    weights = wts,
    offset = offset,
    response_name = deparse1(formula[[2]]),
    re = lapply(re, function(tm) tm[c("grpvar", "cnms", "levels", "group", "Z",
                                        "correlated", "term", "lhs", "ngroups",
                                        "z_scale")]),
    scaling = scaling,
    layout = layout,
    prior = ptab,
    prior_user = prior,
    family = fam$object,
    family_code = fam[c("family", "link", "name", "link_name")],
    coef_names = coef_names,
    draws_names = layout$draws_name,
    nobs = n,
    zi = if (is.null(zi)) NULL else c(zi[c("X", "terms", "scaling", "names", "xlevels",
                                            "contrasts")], list(formula = zif))
  )
  list(spec = spec, info = info)
}
