namespace Engine.Distributed;

/// <summary>How a collective combines the ranks' values (as <c>torch.distributed.ReduceOp</c>).</summary>
public enum ReduceOp
{
    /// <summary>The sum over ranks.</summary>
    Sum,
    /// <summary>The sum divided by the world size (floating dtypes only).</summary>
    Average,
    /// <summary>The elementwise maximum over ranks.</summary>
    Max,
}
