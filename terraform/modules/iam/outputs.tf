output "role_name" {
  description = "Name of the ops host role."
  value       = aws_iam_role.ops.name
}

output "role_arn" {
  description = "ARN of the ops host role."
  value       = aws_iam_role.ops.arn
}

output "instance_profile_name" {
  description = "Instance profile of the ops host."
  value       = aws_iam_instance_profile.ops.name
}

output "policy_json" {
  description = "The rendered least-privilege policy (for review)."
  value       = data.aws_iam_policy_document.ops.json
}

output "restore_instance_prefix" {
  description = "Identifier prefix of the RDS point-in-time restores the ops host may create, tag and delete (<source><restore_suffix>): `dbtier restore rds --new-instance` must start with it."
  value       = local.restore_prefix
}
