# TEST ONLY: moto drops parameter-group parameters on read.
resource "aws_db_parameter_group" "this" {
  lifecycle {
    ignore_changes = [parameter]
  }
}

# TEST ONLY: moto does not keep the Performance Insights settings.
resource "aws_db_instance" "this" {
  lifecycle {
    ignore_changes = [
      performance_insights_enabled,
      performance_insights_kms_key_id,
      performance_insights_retention_period,
    ]
  }
}
