"""mmjax."""
