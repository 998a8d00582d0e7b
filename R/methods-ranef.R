# fixef(), ranef(), VarCorr(), coef(): lme4-shaped results.

#' @importFrom nlme fixef
#' @export
nlme::fixef

#' @importFrom nlme ranef
#' @export
nlme::ranef

#' @importFrom nlme VarCorr
#' @export
nlme::VarCorr

#' Fixed effects of a variational GLMM fit
#'
#' @param object an `svi_fit`.
#' @param component `"cond"` (the fixed effects of the model's mean) or,
#'   for a fit with a `ziformula`, `"zi"` (the zero inflation's
#'   coefficients, on the logit scale), as glmmTMB names them.
#' @param ... unused.
#' @return A named vector of posterior means of the fixed effects, in the
#'   units of the data (names from the columns of the model matrix).
#' @examples
#' fit <- svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy)
#' fixef(fit)
#' @method fixef svi_fit
#' @export
fixef.svi_fit <- function(object, component = c("cond", "zi"), ...) {
  component <- svir_component(object, component)
  if (component == "zi") object$zi$mean else object$fixef$mean
}

# "cond" (the conditional model's fixed effects) or "zi" (the zero
# inflation's), as glmmTMB names them; "zi" needs a ziformula.
svir_component <- function(object, component) {
  component <- svir_match_arg(component, c("cond", "zi"), "component")
  if (component == "zi" && is.null(object$zi)) {
    cli::cli_abort(c("The fit has no zero inflation.",
                     i = "Fit with {.code ziformula = ~1} (or {.code ~ x}) for {.code component = \"zi\"}."),
                   class = "svir_error", call = NULL)
  }
  component
}

#' Random effects of a variational GLMM fit
#'
#' Posterior means of the random effects (`condval`), in the shape of
#' `lme4::ranef()`: a list with one data.frame per grouping factor (rows:
#' levels; columns: the random-effect terms). Terms that share a grouping
#' factor (as `(x || g)` produces) are merged into one data.frame, as lme4
#' does. With `condVar = TRUE` each data.frame carries the attribute
#' `"postVar"`: a `q x q x J` array of posterior covariances of the random
#' effects of each level (a list of such arrays, one per term, when terms
#' share a grouping factor). They average over the posterior of the variance
#' parameters (law of total variance), unlike lme4's conditional variances.
#'
#' @param object an `svi_fit`.
#' @param condVar attach the posterior covariances (`"postVar"`).
#' @param drop return named vectors instead of one-column data.frames.
#' @param whichel names of the grouping factors to return.
#' @param ... unused.
#' @return An object of class `ranef.svi_fit`; `as.data.frame()` turns it
#'   into a data.frame with columns `grpvar`, `term`, `grp`, `condval`,
#'   `condsd`, as for lme4.
#' @examples
#' fit <- svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy)
#' head(ranef(fit)$Subject)
#' head(as.data.frame(ranef(fit)))
#' @method ranef svi_fit
#' @export
ranef.svi_fit <- function(object, condVar = TRUE, drop = FALSE, whichel = NULL, ...) {
  re <- object$re
  if (!length(re)) return(structure(list(), class = "ranef.svi_fit"))
  g <- vapply(re, `[[`, "", "grpvar")
  theta <- object$engine$draws
  ans <- lapply(unique(g), function(gv) {
    ts <- which(g == gv)
    df <- data.frame(do.call(cbind, lapply(ts, function(t) object$ranef[[t]]$condval)),
                     row.names = re[[ts[1]]]$levels, check.names = FALSE)
    if (condVar) {
      pv <- lapply(ts, function(t) {
        if (identical(object$method, "laplace")) {
          cv <- svir_laplace_b_cov(object, t)
          dimnames(cv) <- list(re[[t]]$cnms, re[[t]]$cnms, NULL)
          return(cv)
        }
        A <- svir_re_A(theta, object$index, t, re[[t]], object$scaling$y_scale)
        cv <- svir_re_moments(object$engine$m[[t]], object$engine$C[[t]], A, full = TRUE,
                              shift = svir_re_shift(object$engine, t, object$scaling$y_scale))$cov
        dimnames(cv) <- list(re[[t]]$cnms, re[[t]]$cnms, NULL)
        cv
      })
      if (length(pv) == 1L) {
        pv <- pv[[1L]]
      } else {
        names(pv) <- vapply(ts, function(t) paste(re[[t]]$cnms, collapse = ":"), "")
      }
      attr(df, "postVar") <- pv
    }
    df
  })
  names(ans) <- unique(g)
  if (!is.null(whichel)) {
    bad <- setdiff(whichel, names(ans))
    if (length(bad)) {
      cli::cli_abort("{.arg whichel} names unknown grouping factor{?s} {.val {bad}}; the model has {.val {names(ans)}}.",
                     class = "svir_error", call = NULL)
    }
    ans <- ans[whichel]
  }
  if (drop) {
    ans <- lapply(ans, function(el) {
      if (ncol(el) > 1L) return(el)
      pv <- attr(el, "postVar")
      v <- stats::setNames(el[[1L]], rownames(el))
      if (!is.null(pv)) attr(v, "postVar") <- drop(if (is.list(pv)) pv[[1L]] else pv)
      v
    })
  }
  class(ans) <- "ranef.svi_fit"
  ans
}

#' @method print ranef.svi_fit
#' @export
print.ranef.svi_fit <- function(x, ...) {
  print(lapply(unclass(x), function(el) {
    attr(el, "postVar") <- NULL
    el
  }), ...)
  has_pv <- vapply(x, function(el) !is.null(attr(el, "postVar")), NA)
  if (any(has_pv)) {
    cat("with posterior variances for", paste(dQuote(names(x)[has_pv]), collapse = ", "), "\n")
  }
  invisible(x)
}

#' @rdname ranef.svi_fit
#' @param x a `ranef.svi_fit` object.
#' @param row.names,optional unused (for compatibility with the generic).
#' @method as.data.frame ranef.svi_fit
#' @export
as.data.frame.ranef.svi_fit <- function(x, row.names = NULL, optional = FALSE, ...) {
  parts <- lapply(names(x), function(gv) {
    el <- x[[gv]]
    if (!is.data.frame(el)) {
      el <- data.frame(el, check.names = FALSE)
    }
    cn <- colnames(el)
    J <- nrow(el)
    # lme4 orders the levels of grp by the first column (for dotplots)
    grp <- stats::reorder(factor(rownames(el)), el[[1L]], FUN = mean)
    attr(grp, "scores") <- NULL
    condval <- unlist(el, use.names = FALSE)
    d <- data.frame(grpvar = rep(gv, J * length(cn)),
                    term = factor(rep(cn, each = J), levels = cn),
                    grp = rep(grp, length(cn)),
                    condval = condval, stringsAsFactors = FALSE)
    pv <- attr(el, "postVar")
    if (!is.null(pv)) {
      if (!is.list(pv)) pv <- list(pv)
      d$condsd <- unlist(lapply(pv, function(a) {
        a <- array(a, c(if (length(dim(a)) == 3L) dim(a)[1:2] else c(1L, 1L), J))
        unlist(lapply(seq_len(dim(a)[1L]), function(i) sqrt(a[i, i, ])))
      }), use.names = FALSE)
    }
    d
  })
  out <- do.call(rbind, parts)
  rownames(out) <- NULL
  out
}

#' Variances and correlations of the random effects
#'
#' The covariance matrix of the random effects of each term, in the shape of
#' `lme4::VarCorr()`: a list, one element per random-effect term named by its
#' grouping factor (made unique, as lme4 does for `(x || g)`), of covariance
#' matrices with attributes `"stddev"` and `"correlation"`. The point values
#' are posterior means of the standard deviations and of the correlations;
#' the attribute `"sc"` is the posterior mean of `sigma` (gaussian models).
#'
#' @param x an `svi_fit`.
#' @param sigma unused (for compatibility with the generic).
#' @param ... unused.
#' @return An object of class `VarCorr.svi_fit`; `as.data.frame()` gives
#'   columns `grp`, `var1`, `var2`, `vcov`, `sdcor` as for lme4.
#' @examples
#' fit <- svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy)
#' VarCorr(fit)
#' as.data.frame(VarCorr(fit))
#' @method VarCorr svi_fit
#' @export
VarCorr.svi_fit <- function(x, sigma = 1, ...) {
  pt <- svir_re_point(x)
  ans <- lapply(pt, function(p) {
    v <- outer(p$sd, p$sd) * p$cor
    dimnames(v) <- dimnames(p$cor)
    attr(v, "stddev") <- p$sd
    attr(v, "correlation") <- p$cor
    v
  })
  names(ans) <- make.unique(vapply(x$re, `[[`, "", "grpvar"))
  use_sc <- x$family_name == "gaussian"
  attr(ans, "sc") <- if (use_sc) sigma.svi_fit(x) else 1
  attr(ans, "useSc") <- use_sc
  class(ans) <- "VarCorr.svi_fit"
  ans
}

#' @rdname VarCorr.svi_fit
#' @param digits number of significant digits.
#' @param comp which columns to show: any of `"Variance"`, `"Std.Dev."`.
#' @method print VarCorr.svi_fit
#' @export
print.VarCorr.svi_fit <- function(x, digits = max(3L, getOption("digits") - 2L),
                                  comp = "Std.Dev.", ...) {
  print(svir_format_vc(x, digits = digits, comp = comp), quote = FALSE, ...)
  invisible(x)
}

# Character table Groups / Name / Std.Dev. / Corr as lme4 prints it.
svir_format_vc <- function(x, digits, comp = "Std.Dev.") {
  comp <- match.arg(comp, c("Variance", "Std.Dev."), several.ok = TRUE)
  use_sc <- isTRUE(attr(x, "useSc"))
  sds <- c(lapply(unclass(x), attr, "stddev"),
           if (use_sc) list(Residual = unname(attr(x, "sc"))))
  lens <- lengths(sds)
  nr <- sum(lens)
  cols <- c("Groups", "Name", comp)
  tab <- array("", c(nr, length(cols)), list(rep.int("", nr), cols))
  tab[1L + cumsum(lens) - lens, "Groups"] <- names(lens)
  tab[, "Name"] <- c(unlist(lapply(unclass(x), colnames)), if (use_sc) "")
  if ("Variance" %in% comp) tab[, "Variance"] <- format(unlist(sds)^2, digits = digits)
  if ("Std.Dev." %in% comp) tab[, "Std.Dev."] <- format(unlist(sds), digits = digits)
  if (any(lens > 1L)) {
    maxlen <- max(lens)
    corr <- do.call(rbind, lapply(unclass(x), function(v) {
      cc <- attr(v, "correlation")
      dig <- max(2L, digits - 2L)
      cc <- format(round(cc, dig), nsmall = dig)
      cc[!lower.tri(cc)] <- ""
      if (nrow(cc) < maxlen) cc <- cbind(cc, matrix("", nrow(cc), maxlen - nrow(cc)))
      cc
    }))[, -maxlen, drop = FALSE]
    if (nrow(corr) < nr) corr <- rbind(corr, matrix("", nr - nrow(corr), ncol(corr)))
    colnames(corr) <- c("Corr", rep.int("", max(0L, ncol(corr) - 1L)))
    tab <- cbind(tab, corr)
  }
  tab
}

#' @rdname VarCorr.svi_fit
#' @param row.names,optional unused.
#' @param order `"cov.last"` (variances, then covariances, per group) or
#'   `"lower.tri"` (the lower triangle column by column), as in lme4.
#' @method as.data.frame VarCorr.svi_fit
#' @export
as.data.frame.VarCorr.svi_fit <- function(x, row.names = NULL, optional = FALSE,
                                          order = c("cov.last", "lower.tri"), ...) {
  order <- match.arg(order)
  one <- function(v, grp) {
    lt <- lower.tri(v)
    nm <- rownames(v)
    n <- nrow(v)
    d <- data.frame(grp = grp, var1 = nm[c(seq_len(n), col(v)[lt])],
                    var2 = c(rep(NA_character_, n), nm[row(v)[lt]]),
                    vcov = c(diag(v), v[lt]),
                    sdcor = c(attr(v, "stddev"), attr(v, "correlation")[lt]),
                    stringsAsFactors = FALSE)
    if (order == "lower.tri") {
      m <- matrix(NA_integer_, n, n)
      diag(m) <- seq_len(n)
      m[lt] <- (n + 1L):(n * (n + 1L) / 2L)
      d <- d[m[lower.tri(m, diag = TRUE)], ]
    }
    d
  }
  out <- do.call(rbind, c(Map(one, unclass(x), names(x)), list(deparse.level = 0)))
  if (isTRUE(attr(x, "useSc"))) {
    s <- attr(x, "sc")
    out <- rbind(out, data.frame(grp = "Residual", var1 = NA_character_, var2 = NA_character_,
                                 vcov = s^2, sdcor = s, stringsAsFactors = FALSE))
  }
  rownames(out) <- NULL
  out
}

#' Group-level coefficients
#'
#' Fixed effects plus random effects for each level of each grouping factor,
#' in the shape of `lme4::coef()` (posterior means).
#'
#' @param object an `svi_fit`.
#' @param ... unused.
#' @return A list of data.frames, one per grouping factor (class
#'   `coef.svi_fit`); each has a row per level and a column per fixed effect
#'   (and per random effect without a fixed counterpart, filled with zero
#'   fixed effect).
#' @examples
#' fit <- svi_fit(Reaction ~ Days + (Days | Subject), lme4::sleepstudy)
#' head(coef(fit)$Subject)
#' @method coef svi_fit
#' @export
coef.svi_fit <- function(object, ...) {
  fe <- fixef.svi_fit(object)
  re <- ranef.svi_fit(object, condVar = FALSE)
  extra <- setdiff(unique(unlist(lapply(re, colnames))), names(fe))
  if (length(extra)) fe <- c(stats::setNames(rep(0, length(extra)), extra), fe)
  ans <- lapply(unclass(re), function(r) {
    d <- as.data.frame(matrix(fe, nrow(r), length(fe), byrow = TRUE,
                              dimnames = list(rownames(r), names(fe))),
                       optional = TRUE)
    for (nm in colnames(r)) d[[nm]] <- d[[nm]] + r[[nm]]
    d
  })
  class(ans) <- "coef.svi_fit"
  ans
}

#' @method print coef.svi_fit
#' @export
print.coef.svi_fit <- function(x, ...) {
  print(unclass(x), ...)
  invisible(x)
}
