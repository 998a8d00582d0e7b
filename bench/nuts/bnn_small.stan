// A one-hidden-layer tanh network with svir's bnn() priors (R/bnn.R,
// src/models/bnn/bnn_model.h) on standardised inputs and response: each
// weight of a layer with fan-in m ~ N(0, s^2 / m), biases ~ N(0, sb^2),
// sigma ~ N+(0, 1); the predictive draws at test inputs.
data {
  int<lower=1> N;
  int<lower=1> d;
  int<lower=1> H;
  matrix[N, d] X;
  vector[N] y;
  int<lower=1> M;
  matrix[M, d] Xt;
  real<lower=0> s;
  real<lower=0> sb;
}
parameters {
  matrix[d, H] W1;
  vector[H] b1;
  vector[H] w2;
  real b2;
  real<lower=0> sigma;
}
model {
  matrix[N, H] Z = X * W1 + rep_matrix(b1', N);
  matrix[N, H] A = tanh(Z);
  to_vector(W1) ~ normal(0, s / sqrt(d));
  w2 ~ normal(0, s / sqrt(H));
  b1 ~ normal(0, sb);
  b2 ~ normal(0, sb);
  sigma ~ normal(0, 1);
  y ~ normal(A * w2 + b2, sigma);
}
generated quantities {
  vector[M] mu_t;
  vector[M] y_t;
  {
    matrix[M, H] Zt = Xt * W1 + rep_matrix(b1', M);
    matrix[M, H] At = tanh(Zt);
    mu_t = At * w2 + b2;
    for (m in 1:M) y_t[m] = normal_rng(mu_t[m], sigma);
  }
}
