# TEST ONLY: moto drops some replication rule fields on read.
resource "aws_s3_bucket_replication_configuration" "this" {
  lifecycle {
    ignore_changes = [rule]
  }
}

