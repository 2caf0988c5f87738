"""Test doubles for what cannot run on the test machines (an Iroha peer). Never used in production."""
