using System.Net;
using System.Net.Sockets;

namespace Engine.Distributed;

/// <summary>
/// How ranks that have no MPI agree on a secret (NCCL's unique id), as torchrun's TCP store does with
/// <c>MASTER_ADDR</c> and <c>MASTER_PORT</c>: rank 0 listens on the port, every other rank connects (retrying until
/// the timeout: rank 0 may start later), sends its rank as 4 bytes, and receives the payload (4-byte length, bytes).
/// Only the id travels this way; tensors never do. Rank 0 names the ranks that did not connect in time.
/// </summary>
public static class TcpRendezvous
{
    /// <summary>
    /// Rank 0 sends <paramref name="payload"/> to every other rank and returns it; the others return what they
    /// receive. <paramref name="address"/> is rank 0's host name or address; rank 0 listens on every interface.
    /// </summary>
    public static byte[] Exchange(string address, int port, int rank, int worldSize, byte[]? payload, TimeSpan timeout)
    {
        if (port is <= 0 or > 65535) throw new DistributedException("TcpRendezvous", $"MASTER_PORT {port} is not a TCP port");
        var deadline = DateTime.UtcNow + timeout;
        return rank == 0
            ? Serve(port, worldSize, payload ?? throw new DistributedException("TcpRendezvous", "rank 0 needs the payload"), deadline, timeout)
            : Fetch(address, port, rank, deadline, timeout);
    }

    /// <summary>Reads <c>MASTER_ADDR</c> (default 127.0.0.1) and <c>MASTER_PORT</c> (default 29500, torchrun's).</summary>
    public static (string Address, int Port) FromEnvironment()
    {
        var addr = Environment.GetEnvironmentVariable("MASTER_ADDR") is { Length: > 0 } a ? a : "127.0.0.1";
        var portText = Environment.GetEnvironmentVariable("MASTER_PORT");
        int port = 29500;
        if (!string.IsNullOrEmpty(portText) && !int.TryParse(portText, out port))
            throw new DistributedException("TcpRendezvous", $"MASTER_PORT='{portText}' is not a number");
        return (addr, port);
    }

    static byte[] Serve(int port, int worldSize, byte[] payload, DateTime deadline, TimeSpan timeout)
    {
        using var listener = new TcpListener(IPAddress.Any, port);
        listener.Server.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        listener.Start();
        var joined = new HashSet<int>();
        while (joined.Count < worldSize - 1)
        {
            var left = deadline - DateTime.UtcNow;
            var accept = listener.AcceptTcpClientAsync();
            if (left <= TimeSpan.Zero || !accept.Wait(left))
            {
                var missing = Enumerable.Range(1, worldSize - 1).Where(r => !joined.Contains(r)).ToArray();
                throw new DistributedTimeoutException("TcpRendezvous",
                    $"rank 0 of {worldSize}: rank(s) {string.Join(", ", missing)} did not connect to port {port} within {timeout.TotalSeconds:0.###} s")
                { Ranks = missing };
            }
            using var client = accept.Result;
            var stream = client.GetStream();
            stream.ReadTimeout = stream.WriteTimeout = (int)Math.Max(1000, timeout.TotalMilliseconds);
            var head = new byte[4];
            stream.ReadExactly(head);
            int r = BitConverter.ToInt32(head);
            if (r <= 0 || r >= worldSize || !joined.Add(r))
                throw new DistributedException("TcpRendezvous", $"rank 0 of {worldSize}: a peer announced rank {r} (out of range or twice)");
            stream.Write(BitConverter.GetBytes(payload.Length));
            stream.Write(payload);
        }
        return payload;
    }

    static byte[] Fetch(string address, int port, int rank, DateTime deadline, TimeSpan timeout)
    {
        Exception? last = null;
        while (DateTime.UtcNow < deadline)
        {
            try
            {
                using var client = new TcpClient();
                var connect = client.ConnectAsync(address, port);
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero || !connect.Wait(left)) break;
                var stream = client.GetStream();
                stream.ReadTimeout = stream.WriteTimeout = (int)Math.Max(1000, timeout.TotalMilliseconds);
                stream.Write(BitConverter.GetBytes(rank));
                var head = new byte[4];
                stream.ReadExactly(head);
                var data = new byte[BitConverter.ToInt32(head)];
                stream.ReadExactly(data);
                return data;
            }
            catch (Exception e) when (e is SocketException or AggregateException or IOException)
            {
                last = e;
                Thread.Sleep(50);   // rank 0 not listening yet
            }
        }
        throw new DistributedTimeoutException("TcpRendezvous",
            $"rank {rank}: rank 0 did not answer at {address}:{port} within {timeout.TotalSeconds:0.###} s ({last?.GetBaseException().Message ?? "no connection"})")
        { Ranks = [0] };
    }
}
