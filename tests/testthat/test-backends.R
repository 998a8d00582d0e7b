test_that("svir_backends() lists cpu and cuda", {
  b <- svir_backends()
  expect_s3_class(b, "data.frame")
  expect_named(b, c("backend", "available", "detail"))
  expect_type(b$backend, "character")
  expect_type(b$available, "logical")
  expect_type(b$detail, "character")
  expect_setequal(b$backend, c("cpu", "cuda"))
  expect_false(anyNA(b$available))
})

test_that("the cpu backend is always available", {
  b <- svir_backends()
  expect_true(b$available[b$backend == "cpu"])
  expect_match(b$detail[b$backend == "cpu"], "thread")
})

test_that("the cuda row says why it is or is not available", {
  b <- svir_backends()
  d <- b$detail[b$backend == "cuda"]
  expect_length(d, 1L)
  expect_true(nzchar(d))
  if (!b$available[b$backend == "cuda"]) {
    expect_match(d, "CUDA|cuda")
  }
  # asking twice is harmless (no driver state left behind)
  expect_identical(svir_backends(), b)
})

test_that("auto chooses the CPU and records why", {
  ch <- svir_choose_backend("auto", n = 100)
  expect_identical(ch$backend, "cpu")
  expect_type(ch$reason, "character")
  expect_true(nzchar(ch$reason))
  b <- svir_backends()
  if (b$available[b$backend == "cuda"]) {
    expect_match(ch$reason, "a step's work is only 100 ", fixed = TRUE)
  } else {
    expect_match(ch$reason, "no usable CUDA device", fixed = TRUE)
  }
  expect_identical(svir_choose_backend("cpu")$backend, "cpu")
})

test_that("backend = 'cuda' without a device and unknown names give clear errors", {
  b <- svir_backends()
  if (!b$available[b$backend == "cuda"]) {
    expect_error(svir_choose_backend("cuda"), class = "svir_error")
    expect_error(svir_choose_backend("cuda"), "backend = \"cpu\"", fixed = TRUE)
    # the reason the device cannot run is in the message
    expect_error(svir_choose_backend("cuda"), b$detail[b$backend == "cuda"], fixed = TRUE)
    expect_error(svi_fit(Reaction ~ Days + (1 | Subject), lme4::sleepstudy, backend = "cuda"),
                 class = "svir_error")
  } else {
    ch <- svir_choose_backend("cuda")
    expect_identical(ch$backend, "cuda")
    expect_match(ch$reason, "requested", fixed = TRUE)
  }
  expect_error(svir_choose_backend("gpu"), class = "svir_error")
  expect_error(svir_choose_backend("gpu"), "backend")
  expect_error(svir_choose_backend(1), "backend")
  expect_error(svir_choose_backend(c("cpu", "auto")), "backend")
})

test_that("a usable CUDA device is described (GPU machines only)", {
  b <- svir_backends()
  skip_if_not(b$available[b$backend == "cuda"], "no usable CUDA device")
  expect_match(b$detail[b$backend == "cuda"], "compute capability [0-9]+[.][0-9]+")
  expect_match(b$detail[b$backend == "cuda"], "GiB")
})

test_that("auto's rule takes a device from 10^5 observations per step, where it was measured", {
  rule <- function(size, model = "glmm", method = "svi", mini = FALSE, cpu_only = NULL) {
    .Call(svir:::C_svir_backend_auto_r, model, method, mini, as.double(size), cpu_only)
  }
  # the GLMM's SVI steps: from 10^5 observations (full batch or a minibatch's)
  big <- rule(1e5)
  expect_identical(big$backend, "cuda")
  expect_match(big$reason, "a pretend device", fixed = TRUE)
  expect_match(big$reason, "at least 100000", fixed = TRUE)
  small <- rule(99999)
  expect_identical(small$backend, "cpu")
  expect_match(small$reason, "only 99999", fixed = TRUE)
  expect_identical(rule(2e5, mini = TRUE)$backend, "cuda")
  expect_identical(rule(2e7, method = "qem")$backend, "cuda")
  # what the CUDA code lacks keeps the fit on the CPU, and the reason says what
  zi <- rule(1e7, cpu_only = "Zero inflation runs")
  expect_identical(zi$backend, "cpu")
  expect_match(zi$reason, "Zero inflation runs on the CPU only", fixed = TRUE)
  # pln(): no measured rule, so never the device, whatever the size
  pl <- rule(1e9, model = "pln", method = "vem")
  expect_identical(pl$backend, "cpu")
  expect_match(pl$reason, "no measured rule", fixed = TRUE)
  # a method the device does not have
  expect_identical(rule(1e9, model = "pln", method = "qem")$backend, "cpu")
  expect_match(rule(1e9, model = "pln", method = "qem")$reason, "runs on the CPU only", fixed = TRUE)
})

test_that("the work that auto's rule sees is the engine's: the minibatch's, or QEM's K n + K^2 J", {
  d <- data.frame(y = rpois(300, 2), g = gl(30, 10), h = gl(3, 100))
  built <- svir:::svir_build_spec(y ~ 1 + (1 | g) + (1 | h), d, family = poisson())
  spec <- built$spec
  expect_equal(svir:::svir_glmm_work(spec, svi_control(), "svi"), 300)
  expect_equal(svir:::svir_glmm_work(spec, svi_control(batch_size = 50L), "svi"), 50)
  expect_equal(svir:::svir_glmm_work(spec, svi_control(K = 8L), "qem"), 8 * 300 + 64 * 33)
})
