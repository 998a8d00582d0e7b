#' @keywords internal
"_PACKAGE"

## usethis namespace: start
#' @useDynLib svir, .registration = TRUE, .fixes = "C_"
#' @importFrom stats coef family fitted formula model.frame nobs predict
#'   residuals sigma simulate vcov
#' @importFrom graphics par plot lines abline
#' @importFrom methods is
#' @importFrom rlang abort
## usethis namespace: end
NULL

.onUnload <- function(libpath) {
  library.dynam.unload("svir", libpath)
}
