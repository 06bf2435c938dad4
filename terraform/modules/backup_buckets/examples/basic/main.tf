# Minimal use of the module: primary bucket in eu-south-1, DR copy in eu-west-1.
provider "aws" {
  region = "eu-south-1"
}

provider "aws" {
  alias  = "dr"
  region = "eu-west-1"
}

module "backup_buckets" {
  source = "../.."

  providers = {
    aws    = aws
    aws.dr = aws.dr
  }

  bucket_name                        = "example-dbtier-backups"
  dr_bucket_name                     = "example-dbtier-backups-dr"
  backup_retention_days              = 35
  expiration_days                    = 42
  noncurrent_version_expiration_days = 42
}

output "bucket" {
  value = module.backup_buckets.bucket
}
