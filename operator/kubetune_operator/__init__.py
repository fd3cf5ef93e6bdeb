"""The kubetune operator (kopf). Imports kubetune; kubetune never imports it."""
