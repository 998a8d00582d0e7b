# Philox4x32-10 against the published known-answer vectors, the keyed
# permutation used for minibatches, and the uniform/normal maps.

hex <- function(x) as.numeric(paste0("0x", x))
philox <- function(ctr, key) .Call(C_svir_philox_r, hex(key), hex(ctr))

# Known answers for philox4x32 with 10 rounds, copied from Random123 1.14.0,
# file tests/kat_vectors (Debian: librandom123-doc 1.14.0+dfsg-4,
# /usr/share/doc/librandom123-dev/tests/kat_vectors.gz). Each line there is
# "philox4x32 10 <ctr x4> <key x2>   <out x4>".
kat <- list(
  list(ctr = c("00000000", "00000000", "00000000", "00000000"),
       key = c("00000000", "00000000"),
       out = c("6627e8d5", "e169c58d", "bc57ac4c", "9b00dbd8")),
  list(ctr = c("ffffffff", "ffffffff", "ffffffff", "ffffffff"),
       key = c("ffffffff", "ffffffff"),
       out = c("408f276d", "41c83b0e", "a20bc7c6", "6d5451fd")),
  list(ctr = c("243f6a88", "85a308d3", "13198a2e", "03707344"),
       key = c("a4093822", "299f31d0"),
       out = c("d16cfe09", "94fdcceb", "5001e420", "24126ea1"))
)

test_that("Philox4x32-10 reproduces Random123's known-answer vectors", {
  for (v in kat) {
    expect_identical(philox(v$ctr, v$key), hex(v$out))
  }
})

test_that("Philox4x32-10 matches the kat_vectors file where Debian ships it", {
  f <- "/usr/share/doc/librandom123-dev/tests/kat_vectors.gz"
  skip_if_not(file.exists(f), "librandom123-doc is not installed")
  lines <- grep("^philox4x32 10 ", readLines(f), value = TRUE)
  expect_gt(length(lines), 0L)
  for (l in lines) {
    w <- strsplit(trimws(l), "[[:space:]]+")[[1]]
    expect_identical(philox(w[3:6], w[7:8]), hex(w[9:12]), info = l)
  }
})

test_that("philox entry validates its arguments", {
  expect_error(.Call(C_svir_philox_r, c(0, 0), c(0, 0, 0)), "ctr")
  expect_error(.Call(C_svir_philox_r, c(-1, 0), c(0, 0, 0, 0)), "key")
  expect_error(.Call(C_svir_philox_r, c(2^32, 0), c(0, 0, 0, 0)), "key")
  expect_error(.Call(C_svir_philox_r, c(0.5, 0), c(0, 0, 0, 0)), "key")
})

test_that("the minibatch permutation is a bijection of 0..n-1", {
  for (n in c(1, 2, 3, 4, 5, 16, 17, 1000, 4096, 4097, 73421)) {
    for (rk in c(0, 1, 4294967295)) {
      p <- .Call(C_svir_perm_r, n, 20240607, rk)
      expect_identical(sort(p), seq_len(n) - 1L, info = paste(n, rk))
    }
  }
  expect_identical(.Call(C_svir_perm_r, 0, 1, 0), integer(0))
})

test_that("the permutation depends on the seed and the round key, and repeats", {
  n <- 1000
  p1 <- .Call(C_svir_perm_r, n, 1, 0)
  expect_identical(p1, .Call(C_svir_perm_r, n, 1, 0))
  expect_false(identical(p1, .Call(C_svir_perm_r, n, 2, 0)))
  expect_false(identical(p1, .Call(C_svir_perm_r, n, 1, 1)))
  # looks shuffled: few fixed points, no trend
  expect_lt(sum(p1 == 0:(n - 1)), 10)
  expect_lt(abs(stats::cor(p1, 0:(n - 1))), 0.15)
  # a minibatch (first 100 of the pass) is spread over the whole range
  expect_gt(stats::sd(p1[1:100]), 200)
})

test_that("uniforms lie in the open interval (0, 1) and are uniform", {
  u <- .Call(C_svir_uniforms_r, 42, 1, 0, 1e5)
  expect_true(all(u > 0 & u < 1))
  expect_equal(mean(u), 0.5, tolerance = 0.01)
  expect_equal(stats::var(u), 1 / 12, tolerance = 0.02)
  h <- tabulate(findInterval(u, seq(0, 1, by = 0.1)), nbins = 10)
  expect_gt(stats::chisq.test(h)$p.value, 1e-4)
})

test_that("uniform i uses words 0,1 (even i) or 2,3 (odd i) of call i %/% 2", {
  key <- c(123, 0)
  w <- .Call(C_svir_philox_r, key, c(0, 0, 7, 3))  # pair 0, step 7, stream 3
  u53 <- function(hi, lo) (floor(hi * 2^20) + floor(lo / 2^12) + 0.5) / 2^52
  u <- .Call(C_svir_uniforms_r, 123, 3, 7, 2)
  expect_identical(u[1], u53(w[1], w[2]))
  expect_identical(u[2], u53(w[3], w[4]))
  w5 <- .Call(C_svir_philox_r, key, c(5, 0, 7, 3))  # pair 5 holds draws 10, 11
  u12 <- .Call(C_svir_uniforms_r, 123, 3, 7, 12)
  expect_identical(u12[11:12], c(u53(w5[1], w5[2]), u53(w5[3], w5[4])))
})

test_that("normals are Box-Muller on the two uniforms of one call", {
  key <- c(99, 0)
  w <- .Call(C_svir_philox_r, key, c(0, 0, 2, 1))
  u53 <- function(hi, lo) (floor(hi * 2^20) + floor(lo / 2^12) + 0.5) / 2^52
  u1 <- u53(w[1], w[2])
  u2 <- u53(w[3], w[4])
  z <- .Call(C_svir_normals_r, 99, 1, 2, 2)
  r <- sqrt(-2 * log(u1))
  expect_equal(z, c(r * cos(2 * pi * u2), r * sin(2 * pi * u2)), tolerance = 1e-14)
})

# Box-Muller by R's (libm's) log, sin and cos, after the same exact reduction
# of the angle to [-pi/4, pi/4] that svir uses (2 * pi * u itself carries an
# error of up to 2^-51 before any cos is taken)
bm_ref <- function(u1, u2) {
  q <- floor(4 * u2 + 0.5)
  a <- 2 * pi * (u2 - q / 4)
  r <- sqrt(-2 * log(u1))
  k <- q %% 4
  c0 <- ifelse(k %% 2 == 1, sin(a), cos(a))
  s0 <- ifelse(k %% 2 == 1, cos(a), sin(a))
  cbind(r = r, c = r * ifelse(k %in% c(1, 2), -c0, c0), s = r * ifelse(k >= 2, -s0, s0))
}

test_that("svir's own log and sin/cos give libm's Box-Muller to about an ulp", {
  # 10^5 pairs: all four quadrants, u1 over its whole range
  n <- 2e5
  u <- .Call(C_svir_uniforms_r, 4242, 2, 9, n)
  z <- .Call(C_svir_normals_r, 4242, 2, 9, n)
  ref <- bm_ref(u[c(TRUE, FALSE)], u[c(FALSE, TRUE)])
  err <- abs(z - c(t(ref[, c("c", "s")]))) / pmax(1, rep(ref[, "r"], each = 2))
  expect_lt(max(err), 1e-15)
  # edges: the ends of the uniform grid, the quarter turns, fdlibm's
  # switch points of the cosine kernel (|a| = 0.3 and 0.78125)
  for (b in c(0, 1, 2^52 - 1, 2^51, 2^50, 3 * 2^50)) {
    uu <- (b + 0.5) / 2^52
    got <- .Call(C_svir_box_muller_r, uu, 0.3, FALSE)
    expect_lt(max(abs(got - bm_ref(uu, 0.3)[, c("c", "s")])), 1e-15 * max(1, bm_ref(uu, 0.3)[, "r"]))
  }
  for (v in c((0:8) / 8, 0.3 / (2 * pi) + c(-1e-12, 0, 1e-12), 0.78125 / (2 * pi) + c(-1e-12, 1e-12),
              1 / 4 - 1e-9, 1 - 2^-53)) {
    got <- .Call(C_svir_box_muller_r, exp(-0.5), v, FALSE) # r = 1
    expect_lt(max(abs(got - bm_ref(exp(-0.5), v)[, c("c", "s")])), 4e-16)
  }
})

test_that("batched Box-Muller (vector registers where built) is the scalar one bit for bit", {
  # the edges of the test above, and random pairs, in batches of odd and
  # even length (the vector path takes two pairs at a time)
  b <- c(0, 1, 2^52 - 1, 2^51, 2^50, 3 * 2^50)
  v <- c((0:8) / 8, 0.3 / (2 * pi) + c(-1e-12, 0, 1e-12), 0.78125 / (2 * pi) + c(-1e-12, 1e-12),
         1 / 4 - 1e-9, 1 - 2^-53, 0.125 + c(-2^-53, 2^-53), 0.375 + c(-2^-53, 2^-53))
  u1 <- c((b + 0.5) / 2^52, rep(exp(-0.5), length(v)))
  u2 <- c(rep(0.3, length(b)), v)
  set.seed(3)
  u1 <- c(u1, runif(41))
  u2 <- c(u2, runif(41))
  for (len in c(1, 2, 7, 64)) {
    for (s in seq(1, length(u1), by = len)) {
      i <- s:min(length(u1), s + len - 1)
      expect_identical(.Call(C_svir_box_muller_r, u1[i], u2[i], TRUE),
                       .Call(C_svir_box_muller_r, u1[i], u2[i], FALSE))
    }
  }
  expect_error(.Call(C_svir_box_muller_r, 0.5, c(0.1, 0.2), TRUE), "same length")
})

test_that("bulk normals in pairs are the same numbers as one at a time", {
  # 10^5 normals: every batch goes through svir_box_muller_batch
  expect_identical(.Call(C_svir_normal_fill_r, 4242, 2, 9, 1, 1e5),
                   .Call(C_svir_normals_r, 4242, 2, 9, 1e5 + 1)[-1])
  ref <- .Call(C_svir_normals_r, 31, 3, 5, 40)
  for (first in c(0, 1, 6, 7)) {
    for (n in c(0, 1, 2, 5, 20)) {
      got <- .Call(C_svir_normal_fill_r, 31, 3, 5, first, n)
      expect_identical(got, ref[first + seq_len(n)])
    }
  }
})

test_that("normal draws have mean 0 and sd 1", {
  z <- .Call(C_svir_normals_r, 2024, 1, 0, 1e5)
  expect_true(all(is.finite(z)))
  expect_lt(abs(mean(z)), 4 / sqrt(1e5))
  expect_equal(stats::sd(z), 1, tolerance = 0.01)
  expect_lt(abs(mean(z^3)), 0.05)            # skewness
  expect_equal(mean(z^4), 3, tolerance = 0.03)   # kurtosis
  expect_gt(stats::ks.test(z, "pnorm")$p.value, 1e-4)
  # neighbours (the two halves of one Box-Muller pair) are uncorrelated
  expect_lt(abs(stats::cor(z[c(TRUE, FALSE)], z[c(FALSE, TRUE)])), 0.02)
})

test_that("streams, steps and seeds give different draws; a seed repeats", {
  a <- .Call(C_svir_normals_r, 7, 1, 0, 1000)
  expect_identical(a, .Call(C_svir_normals_r, 7, 1, 0, 1000))
  expect_false(any(a == .Call(C_svir_normals_r, 7, 2, 0, 1000)))
  expect_false(any(a == .Call(C_svir_normals_r, 7, 1, 1, 1000)))
  expect_false(any(a == .Call(C_svir_normals_r, 8, 1, 0, 1000)))
  # a seed above 2^32 uses the high key word
  expect_false(identical(.Call(C_svir_normals_r, 2^32 + 7, 1, 0, 10), a[1:10]))
  # element i does not depend on how many were drawn
  expect_identical(.Call(C_svir_normals_r, 7, 1, 0, 11), a[1:11])
})

test_that("the networks' fast normals (ziggurat over xoshiro256++ blocks) are standard normal", {
  # 200 blocks of 10^4: the blocks' generators seeded from Philox counters
  z <- unlist(lapply(0:199, function(b) .Call(C_svir_zig_fill_r, 77, 2, 3, b, 1e4)))
  expect_true(all(is.finite(z)))
  n <- length(z)
  # the distribution: Kolmogorov-Smirnov (at 2e6 draws it sees a CDF error
  # of 0.0015), and 400 equiprobable bins (the layers' edges, the wedges'
  # test and the tail each shape part of the curve)
  expect_gt(suppressWarnings(stats::ks.test(z, "pnorm")$p.value), 1e-4)
  cnt <- tabulate(findInterval(stats::pnorm(z), seq(0, 1, length.out = 401), all.inside = TRUE), 400)
  expect_gt(stats::pchisq(sum((cnt - n / 400)^2 / (n / 400)), 399, lower.tail = FALSE), 1e-4)
  # the tail beyond the base layer's edge r, by Marsaglia's method, and
  # far out
  r <- 3.6541528853610088
  for (q in c(r, 4.5)) {
    p <- 2 * stats::pnorm(-q)
    expect_lt(abs(mean(abs(z) > q) - p), 5 * sqrt(p * (1 - p) / n), label = paste("tail beyond", q))
  }
  expect_lt(abs(mean(z)), 5 / sqrt(n))
  expect_equal(mean(z^2), 1, tolerance = 5 * sqrt(2 / n))
  expect_equal(mean(z^4), 3, tolerance = 5 * sqrt(96 / n))
  # neighbouring blocks uncorrelated; a block's numbers are its own,
  # whatever is asked of it
  expect_lt(abs(stats::cor(z[1:1e4], z[1e4 + 1:1e4])), 5 / sqrt(1e4))
  expect_identical(.Call(C_svir_zig_fill_r, 77, 2, 3, 5, 100), z[5e4 + 1:100])
  expect_false(identical(.Call(C_svir_zig_fill_r, 78, 2, 3, 5, 100), z[5e4 + 1:100]))
  expect_false(identical(.Call(C_svir_zig_fill_r, 77, 2, 4, 5, 100), z[5e4 + 1:100]))
})
