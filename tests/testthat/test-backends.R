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
    expect_match(ch$reason, "no measured rule", fixed = TRUE)
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
