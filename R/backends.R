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

# Picks the backend a fit runs on and says why, for the fit's record.
# `n` (observations) is for the size rule of "auto". That rule must come from
# timings on real hardware (bench/README.md); none has been measured yet, so
# "auto" runs on the CPU and says so.
svir_choose_backend <- function(backend = "auto", n = NA_real_) {
  if (!is.character(backend) || length(backend) != 1L || is.na(backend)) {
    cli::cli_abort(
      c("{.arg backend} must be one of {.val auto}, {.val cpu}, or {.val cuda}.",
        "x" = "You supplied {.obj_type_friendly {backend}}."),
      class = "svir_error"
    )
  }
  choices <- c("auto", "cpu", "cuda")
  if (!backend %in% choices) {
    cli::cli_abort(
      c("{.arg backend} must be one of {.or {.val {choices}}}.",
        "x" = "Unknown backend {.val {backend}}."),
      class = "svir_error"
    )
  }
  if (backend == "cpu") {
    return(list(backend = "cpu", reason = "backend = \"cpu\" was requested"))
  }
  b <- svir_backends()
  cuda <- b[b$backend == "cuda", , drop = FALSE]
  usable <- nrow(cuda) == 1L && isTRUE(cuda$available)
  if (backend == "cuda") {
    if (!usable) {
      cli::cli_abort(
        c("{.code backend = \"cuda\"} needs a usable CUDA device.",
          "x" = "{cuda$detail[1L]}",
          "i" = "See {.code svir_backends()}.",
          ">" = "Use {.code backend = \"cpu\"} or {.code backend = \"auto\"}."),
        class = "svir_error"
      )
    }
    return(list(backend = "cuda",
                reason = paste0("backend = \"cuda\" was requested (", cuda$detail[1L], ")")))
  }
  reason <- if (usable) {
    paste0("a CUDA device was found (", cuda$detail[1L], "), but \"auto\" has no ",
           "measured rule yet for when it is faster, so it fits on the CPU")
  } else {
    paste0("no usable CUDA device: ", cuda$detail[1L])
  }
  list(backend = "cpu", reason = reason)
}
