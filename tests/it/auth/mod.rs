//! Who is calling: API tokens are exercised by every test; JWTs here.

mod jwt;
