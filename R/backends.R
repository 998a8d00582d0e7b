#' Computing backends of this svir build
#'
#' Lists the engines svir can fit with and whether each can run on this
#' machine. The CPU backend (C with 'OpenMP' threads) is always there. The CUDA
#' backend exists when svir was installed with the CUDA toolkit present (see
#' the `configure` script: `CUDA_HOME`, `nvcc` on the `PATH`, or
#' `/usr/local/cuda`; the installer can switch it off with the environment
#' variable `SVIR_CUDA=no`), and is available when a CUDA driver and a
#' supported GPU are found at run time. A build with CUDA still loads and
#' fits on the CPU where no GPU or driver is present.
#'
#' @return A data frame with one row per backend and columns `backend`
#'   (character: `"cpu"`, `"cuda"`), `available` (logical) and `detail`
#'   (character: threads, the GPU found, or why the backend cannot run).
#' @seealso The `backend` argument of [svi_fit()].
#' @export
#' @examples
#' svir_backends()
svir_backends <- function() {
  b <- .Call(C_svir_backends_r)
  data.frame(
    backend = b$backend,
    available = b$available,
    detail = b$detail,
    stringsAsFactors = FALSE
  )
}
